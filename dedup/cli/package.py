"""``dedup lambda-zip``: build the Lambda deployment package of the core and print its size."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lambda-zip`` to the ``dedup`` parser."""
    parser = subparsers.add_parser(
        "lambda-zip", help="build the Lambda deployment package (the core and its dependencies)",
        description="Builds a zip of dedup without extras and its dependencies (redis, jmespath), plus "
                    "your handler's modules (--add), and prints its size. Upload it and point the "
                    "template's CodeS3Bucket / CodeS3Key at it (`dedup provision --emit-template`); the "
                    "handler is dedup.aws.lambda_handler.handler.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output", default="build/dedup-lambda.zip", help="where to write the zip")
    parser.add_argument("--add", action="append", default=[], metavar="PATH",
                        help="a module or package of yours to put at the zip's root (repeatable)")
    parser.set_defaults(func=_lambda_zip)


def _lambda_zip(args: argparse.Namespace) -> int:
    from dedup.aws.lambda_zip import build_lambda_zip

    print(build_lambda_zip(args.output, add=args.add).summary())
    return 0
