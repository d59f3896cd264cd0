"""Every MLflow key that one part of mfexp writes and another reads: the ``mfexp.*`` tags and the metric names.

Plain strings, no imports: the sweeper (imported by Hydra's plugin scan), the report, the GAN plugin
and the training run all read them from here, so a key is spelled once. ``mfexp.tracking`` re-exports
the five run tags it has always had.
"""
from __future__ import annotations

PREFIX = "mfexp."

# ------------------------------------------------------------------ every tracked run (mfexp/run.py)
TAG_ROLE = "mfexp.role"  # baseline | candidate | final | reference | sweep | gan
TAG_FINGERPRINT = "mfexp.fingerprint"  # sha256 of the dataset (mfexp/data.py)
TAG_POLICY = "mfexp.policy"  # three-word policy name (mfexp/policy_names.py)
TAG_ENGINE = "mfexp.engine_version"
TAG_CLASS_NAMES = "mfexp.class_names"  # JSON {key name: class name} of the classes mfexp.names renamed in metric keys

# ------------------------------------------------------------------ a sweep's candidates (set by the sweeper
# through ``tracking.tags.<short name>``; mfexp/run.py logs a key without a dot as ``mfexp.<key>``)
TAG_CANDIDATE = "mfexp.candidate"  # resume key: canonical overrides + data fingerprint
TAG_STAGE = "mfexp.stage"
TAG_TECHNIQUE = "mfexp.technique"
TAG_FIDELITY = "mfexp.fidelity"  # e<epochs>-s<subset>
TAG_RUNG = "mfexp.rung"
TAG_STAGE_WINNER = "mfexp.stage_winner"  # "true" on the screening baseline and every kept stage's winner
TAG_PROPOSAL = "mfexp.proposal"  # density backend: the proposal a full-budget candidate trains (nested-1, diverse, ...)
TAG_FROM_CANDIDATE = "mfexp.from_candidate"  # on a final run: the full-budget candidate whose policy it refits

# ------------------------------------------------------------------ the sweep (parent) run
TAG_SWEEP_KEY = "mfexp.sweep_key"  # settings + overrides + fingerprint: a rerun resumes the same sweep
TAG_SWEEP_DIR = "mfexp.sweep_dir"
TAG_ERROR = "mfexp.error"  # why the sweep FAILED
TAG_BASELINE_RUN = "mfexp.baseline_run_id"
TAG_REFERENCE_RUN = "mfexp.reference_run_id"
TAG_BEST_RUN = "mfexp.best_run_id"
TAG_BEST_ROLE = "mfexp.best_role"
TAG_KEPT = "mfexp.kept"  # comma-separated techniques, in search order
TAG_REJECTED = "mfexp.rejected"
TAG_REJECTED_REASONS = "mfexp.rejected_reasons"  # JSON: technique -> verdict
TAG_RANKING_HELD = "mfexp.ranking_held"  # "true" when the full-budget runs agree with the screening
TAG_RANKING_VERDICT = "mfexp.ranking_verdict"  # one line: which full-budget run the sweep keeps, and why
TAG_RANKING_AGREEMENT = "mfexp.ranking_agreement"  # one line: Spearman's rho screening vs full budget, or why undefined
TAG_SEARCH_NOTE = "mfexp.search_note"  # one line from the backend on how it chose (density matching: what it kept, why)
TAG_RANKING_PAIRS = "mfexp.ranking_pairs"  # JSON: the policies trained at both fidelities, their runs and losses
TAG_REPORT = "mfexp.report"  # the report's artifact path
TAG_DELIVERY_RULE = "mfexp.delivery_rule"  # the rule that chose what the sweep delivers (delivery.py)
TAG_DELIVERED = "mfexp.delivered"  # what it delivered: baseline, reference, final, or a density proposal's name
TAG_DELIVERY = "mfexp.delivery"  # JSON: the decision, every challenger's paired comparison with the baseline
TAG_PROPOSALS = "mfexp.proposals"  # JSON (density backend): every proposal, its policy, run, val loss, status

# ------------------------------------------------------------------ model registry (mfexp/report/registry.py)
TAG_TEST_ERROR = "mfexp.test_error_rate"
TAG_SWEEP_RUN = "mfexp.sweep_run_id"
TAG_DECISION = "mfexp.decision"  # champion | challenger, and why

# ------------------------------------------------------------------ synthetic data (plugins/mfexp_plugins/gan)
TAG_GAN_KEY = "mfexp.gan_key"
TAG_GAN_RUN = "mfexp.gan_run_id"  # set on the caller's run: which generator made its synthetic images
TAG_REQUESTED_BY = "mfexp.requested_by"  # on a GAN run: the run that had it trained

# ------------------------------------------------------------------ MLflow's own
TAG_PARENT = "mlflow.parentRunId"

# ------------------------------------------------------------------ metrics of a training run
BEST_VAL_LOSS = "best_val_loss"  # the objective
EPOCHS_RUN = "epochs_run"
TRAIN_SECONDS = "train_seconds"
TEST_ERROR_RATE = "test_error_rate"
TEST_ACCURACY = "test_accuracy"
TEST_MACRO_F1 = "test_macro_f1"
VAL_PREDICTIONS = "val_predictions.csv"  # the first fit's validation predictions (before any refit), every run
DENSITY_ARTIFACT = "density.json"  # density matching's probe scores (mfexp/density.py), on a density search's baseline

# ------------------------------------------------------------------ inspection: defect vs good (mfexp/inspection.py, mfexp/gallery.py)
ESCAPE_RATE = "escape_rate"  # test_escape_rate: defective parts called good / defective parts (argmax decision)
FALSE_REJECT_RATE = "false_reject_rate"  # test_false_reject_rate: good parts flagged / good parts
AT_THRESHOLD = "_at_threshold"  # suffix: the same rate at the defect threshold (test_escape_rate_at_threshold)
DEFECT_AUROC = "defect_auroc"  # test_defect_auroc: ROC area of the defect score 1 - P(good)
DEFECT_AVERAGE_PRECISION = "defect_average_precision"  # test_defect_average_precision
DEFECT_THRESHOLD = "defect_threshold"  # metric, and the logged model's metadata key: flag when 1 - P(good) >= it
MISTAKES_PNG = "mistakes.png"  # the gallery of the test images a run gets wrong, worst first
MISTAKES_NPZ = "mistakes.npz"  # the same mistakes as data: index (test row), images (thumbnails), y_true, y_pred, confidence

# ------------------------------------------------------------------ metrics and params of the sweep run
SEARCH_CANDIDATES = "search.candidates"
SEARCH_CANDIDATE_EPOCHS = "search.candidate_epochs"
SEARCH_COST_MULTIPLE = "search.cost_multiple"
SEARCH_WALL_SECONDS = "search.wall_seconds"
SEARCH_NOISE = "search.noise"
SEARCH_THRESHOLD = "search.threshold"
SCREEN_BASELINE_VAL_LOSS = "screen.baseline_val_loss"
SCREEN_BEST_VAL_LOSS = "screen.best_val_loss"
CHECK_SCREEN_GAIN = "check.screen_gain"
CHECK_FULL_GAIN = "check.full_gain"
CHECK_SPEARMAN_RHO = "check.spearman_rho"  # screening vs full-budget val loss; logged only when defined (>= 3 pairs)
CHECK_RANK_PAIRS = "check.rank_pairs"  # how many policies were trained at both fidelities
PARAM_SEARCH_AXES = "search.axes"  # comma-separated technique.axis, in search order


def stage_best_run_tag(stage: int) -> str:
    return f"mfexp.stage.{stage}.best_run_id"


def stage_verdict_tag(stage: int) -> str:
    return f"mfexp.stage.{stage}.verdict"


def short(tag: str) -> str:
    """The ``tracking.tags`` key that makes mfexp/run.py log ``tag`` (``mfexp.stage`` -> ``stage``)."""
    return tag.removeprefix(PREFIX)
