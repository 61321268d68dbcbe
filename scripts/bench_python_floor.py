"""The benchmark's Python floor peer: the least a Python Lambda doing
scim-relay's job would do before it can take its first event. It imports
boto3 and requests, builds a Secrets Manager client, and polls the same
Lambda Runtime API as scim-relay (AWS_LAMBDA_RUNTIME_API), answering every
event with an empty result. Run by scripts/bench_run.py; never deployed.
"""
import os

import boto3
import requests

secrets = boto3.client("secretsmanager")
api = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime/invocation"
session = requests.Session()
while True:
    event = session.get(f"{api}/next")
    request_id = event.headers["Lambda-Runtime-Aws-Request-Id"]
    session.post(f"{api}/{request_id}/response", data=b'{"results":[]}')
