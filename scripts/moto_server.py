"""moto_server, with two fixes that make its Secrets Manager behave like the
real service where scim-relay depends on it (moto 5.2.5):

1. PutSecretValue keeps the custom staging labels of the version that loses
   AWSCURRENT (moto replaces all of its labels with AWSPREVIOUS; AWS only
   moves AWSCURRENT and AWSPREVIOUS, "staging labels ... remain attached").
2. UpdateSecretVersionStage refuses to attach a label that another version
   holds unless RemoveFromVersionId names that version (AWS: "If the staging
   label is already attached to a different version of the secret, then you
   must also specify the RemoveFromVersionId parameter"); moto attached the
   label to both versions.

Usage: python scripts/moto_server.py -H 127.0.0.1 -p PORT
"""
import sys

from moto.secretsmanager import models
from moto.secretsmanager.exceptions import InvalidParameterException


def reset_default_version(self, secret_version, version_id):
    for old in self.versions.values():
        if "AWSPREVIOUS" in old["version_stages"]:
            old["version_stages"].remove("AWSPREVIOUS")
    if self.default_version_id:
        stages = self.versions[self.default_version_id]["version_stages"]
        if "AWSCURRENT" in stages:
            stages.remove("AWSCURRENT")
        stages.append("AWSPREVIOUS")
    self.versions[version_id] = secret_version
    self.default_version_id = version_id


models.FakeSecret.reset_default_version = reset_default_version

_update_stage = models.SecretsManagerBackend.update_secret_version_stage


def update_secret_version_stage(self, secret_id, version_stage, remove_from_version_id, move_to_version_id):
    secret = self.secrets[secret_id] if secret_id in self.secrets else None
    if secret is not None and move_to_version_id and version_stage != "AWSCURRENT":
        holders = [v for v, d in secret.versions.items() if version_stage in d["version_stages"]]
        others = [v for v in holders if v != move_to_version_id]
        if others and remove_from_version_id not in others:
            raise InvalidParameterException(
                f"The staging label {version_stage} is currently attached to version {others[0]}, "
                "so you must explicitly reference that version in RemoveFromVersionId."
            )
    return _update_stage(self, secret_id, version_stage, remove_from_version_id, move_to_version_id)


models.SecretsManagerBackend.update_secret_version_stage = update_secret_version_stage

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main())
