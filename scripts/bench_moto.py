"""moto_server for the benchmark: the project's moto (scripts/moto_server.py,
with its two Secrets Manager fixes), plus a call log so that the benchmark
can count the AWS calls one invocation makes.

Every call of the backend operations below appends one line to the file
named by BENCH_MOTO_CALLS:  OPERATION<TAB>SECRET_ID_OR_TOPIC<TAB>VERSION_ID
(moto has no per-call counter of its own). The benchmark reads the lines
written between the start and the end of an invocation. Werkzeug's
per-request log is switched off to keep the mock's own overhead down.

Usage: BENCH_MOTO_CALLS=/tmp/calls.log python scripts/bench_moto.py -H 127.0.0.1 -p PORT
"""
import functools
import importlib.util
import logging
import os
import sys
import threading

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("scim_relay_moto", os.path.join(here, "moto_server.py"))
fixes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixes)  # applies the project's moto fixes

from moto.secretsmanager import models as sm_models  # noqa: E402
from moto.sns import models as sns_models  # noqa: E402

_log = open(os.environ["BENCH_MOTO_CALLS"], "a", buffering=1, encoding="utf-8")
_lock = threading.Lock()


def _record(op, target, version=""):
    with _lock:
        _log.write(f"{op}\t{target}\t{version or ''}\n")


def _wrap(cls, name, op, target_arg, version_arg=None, position=0):
    original = getattr(cls, name)

    @functools.wraps(original)
    def wrapper(self, *args, **kwargs):
        target = kwargs.get(target_arg, args[position] if len(args) > position else "")
        version = kwargs.get(version_arg, "") if version_arg else ""
        _record(op, target, version)
        return original(self, *args, **kwargs)

    setattr(cls, name, wrapper)


SM = sm_models.SecretsManagerBackend
_wrap(SM, "describe_secret", "DescribeSecret", "secret_id")
_wrap(SM, "get_secret_value", "GetSecretValue", "secret_id", "version_id")
_wrap(SM, "update_secret_version_stage", "UpdateSecretVersionStage", "secret_id", "move_to_version_id")
_wrap(SM, "tag_resource", "TagResource", "arn")
_wrap(SM, "put_secret_value", "PutSecretValue", "secret_id")
_wrap(sns_models.SNSBackend, "publish", "Publish", "arn", position=1)

if __name__ == "__main__":
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.server import main

    sys.exit(main())
