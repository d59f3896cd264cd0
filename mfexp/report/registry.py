"""Register the best model and decide its alias: ``champion`` or ``challenger`` (aliases, not stages).

The rule (docs/report.md):

* no champion yet under this name                  -> champion
* champion tested on the same data (same ``mfexp.fingerprint`` tag):
  strictly lower ``test_error_rate``                 -> champion; otherwise (tie or worse) -> challenger
* champion tested on other data (different fingerprint, or no test_error_rate): the error rates
  are not comparable. Default (``on_new_data="challenger"``): challenger, and the report says why
  and how to promote by hand; ``on_new_data="champion"`` promotes the model trained on the new data.
* the best run is already the champion (the report ran again) -> stays champion

Re-running the report for the same sweep reuses the model version of the same run.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mfexp import keys
from mfexp.errors import ConfigError

CHAMPION, CHALLENGER = "champion", "challenger"
ON_NEW_DATA = (CHALLENGER, CHAMPION)
log = logging.getLogger("mfexp.report")


@dataclass(frozen=True)
class Incumbent:
    version: str
    run_id: str
    test_error_rate: float | None
    fingerprint: str


@dataclass(frozen=True)
class Registration:
    name: str
    registered: bool
    version: str | None = None
    alias: str | None = None
    reason: str = ""
    model_uri: str | None = None
    incumbent: Incumbent | None = None  # the champion before this report

    def as_dict(self) -> dict:
        return asdict(self)


def default_name(experiment: str) -> str:
    return f"{experiment}-classifier"


def decide(error_rate: float, fingerprint: str, incumbent: Incumbent | None, on_new_data: str = CHALLENGER) -> tuple[str, str]:
    """(alias, why) for a new model with ``error_rate`` on data ``fingerprint`` against ``incumbent``."""
    if on_new_data not in ON_NEW_DATA:
        raise ConfigError(f"on_new_data={on_new_data!r}: use one of {', '.join(ON_NEW_DATA)}")
    if incumbent is None:
        return CHAMPION, "first model under this name: no champion to beat"
    if incumbent.fingerprint != fingerprint or incumbent.test_error_rate is None:
        what = ("has no test_error_rate" if incumbent.test_error_rate is None else
                f"was tested on other data (fingerprint {incumbent.fingerprint[:12] or 'unset'} vs {fingerprint[:12]})")
        if on_new_data == CHAMPION:
            return CHAMPION, f"champion version {incumbent.version} {what}: not comparable; the model on the new data takes over"
        return CHALLENGER, (f"champion version {incumbent.version} {what}: error rates are not comparable, so the "
                            "champion stays; promote this version by hand if the new data is the one that counts")
    if error_rate < incumbent.test_error_rate:
        return CHAMPION, (f"test error {error_rate:.2%} beats champion version {incumbent.version} "
                          f"({incumbent.test_error_rate:.2%}) on the same test data")
    return CHALLENGER, (f"test error {error_rate:.2%} does not beat champion version {incumbent.version} "
                        f"({incumbent.test_error_rate:.2%}) on the same test data" +
                        (" (a tie keeps the champion)" if error_rate == incumbent.test_error_rate else ""))


def _incumbent(client: MlflowClient, name: str) -> Incumbent | None:
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    err, fp = None, ""
    try:
        run = client.get_run(mv.run_id)
        err = run.data.metrics.get(keys.TEST_ERROR_RATE)
        fp = run.data.tags.get(keys.TAG_FINGERPRINT, "")
    except MlflowException:  # the champion's run was deleted: fall back to the version's own tags
        tags = mv.tags or {}
        err = float(tags[keys.TAG_TEST_ERROR]) if keys.TAG_TEST_ERROR in tags else None
        fp = tags.get(keys.TAG_FINGERPRINT, "")
    return Incumbent(str(mv.version), mv.run_id or "", err, fp)


def _existing_version(client: MlflowClient, name: str, run_id: str):
    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    return min(versions, key=lambda v: int(v.version)) if versions else None


def model_uri(client: MlflowClient, run: mlflow.entities.Run) -> str:
    """The run's logged model ``model``: ``models:/<model id>`` (MLflow 3 logged model), else ``runs:/<id>/model``."""
    try:
        found = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
        ready = [m for m in found if m.name == "model" and str(m.status).endswith("READY")]
        if ready:
            return f"models:/{max(ready, key=lambda m: m.creation_timestamp or 0).model_id}"
    except (MlflowException, AttributeError, TypeError):
        pass
    return f"runs:/{run.info.run_id}/model"


def register(client: MlflowClient, name: str, run_id: str, sweep_run_id: str, on_new_data: str = CHALLENGER) -> Registration:
    """Register the run's model (``runs:/<run_id>/model``) under ``name``; alias ``champion`` or ``challenger``."""
    run = client.get_run(run_id)
    error_rate = float(run.data.metrics[keys.TEST_ERROR_RATE])
    fingerprint = run.data.tags.get(keys.TAG_FINGERPRINT, "")
    uri = model_uri(client, run)
    incumbent = _incumbent(client, name)
    mv = _existing_version(client, name, run_id)
    if mv is None:
        try:
            mv = mlflow.register_model(uri, name, tags={
                keys.TAG_FINGERPRINT: fingerprint, keys.TAG_TEST_ERROR: repr(error_rate),
                keys.TAG_SWEEP_RUN: sweep_run_id, keys.TAG_POLICY: run.data.tags.get(keys.TAG_POLICY, ""),
                keys.TAG_ROLE: run.data.tags.get(keys.TAG_ROLE, "")})
        except MlflowException as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return Registration(name, False, reason=f"could not register {uri}: {first}", model_uri=uri, incumbent=incumbent)
    version = str(mv.version)
    if incumbent is not None and incumbent.version == version:
        alias, why = CHAMPION, f"version {version} (this run) is already the champion"
    else:
        alias, why = decide(error_rate, fingerprint, incumbent, on_new_data)
    client.set_registered_model_alias(name, alias, version)
    if alias == CHAMPION:
        try:  # a promoted challenger is no longer the challenger
            if str(client.get_model_version_by_alias(name, CHALLENGER).version) == version:
                client.delete_registered_model_alias(name, CHALLENGER)
        except MlflowException:
            pass
    client.set_model_version_tag(name, version, keys.TAG_DECISION, f"{alias}: {why}"[:5000])
    log.info("registry: %s version %s -> @%s (%s)", name, version, alias, why)
    return Registration(name, True, version, alias, why, f"models:/{name}@{alias}", incumbent)
