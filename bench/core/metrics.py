"""The names of the board metrics and which way is better: vocabulary shared by the suite schema
([check] tolerance keys), `check`, `rank` and the reports, so none of them has to import another's layer."""

# the leaderboard of the image protocols (bench.reports.leaderboard): input and model authorization
LEADERBOARD_METRICS = {"authorized_top1": "higher", "retained": "higher", "attacked_gap": "higher",
                       "unauthorized_mean": "lower", "unauthorized_worst": "lower"}
# The leaderboard's gap scores the authorized model on the attacked release too; the boards' auth_gap scores it on
# the release as delivered (bench.reports.boards). One name per quantity: this one is `attacked_gap`. References
# and [check] tolerances written before the rename say `auth_gap` for it, and are read as `attacked_gap`.
LEGACY_METRICS = {"auth_gap": "attacked_gap"}
# the ownership-verification board (bench.reports.fingerprint)
FINGERPRINT_METRICS = {"auc": "higher", "tpr@1%fpr": "higher"}
# the unlearnable-examples board (bench.protocols.unlearnable): test top-1 of models trained on protected data
UNLEARNABLE_METRICS = {"top1": "lower"}
# the GLUE (NE text) board (bench.protocols.glue): a cell's primary GLUE metric x 100, by the evaluated model's role
GLUE_METRICS = {"glue_clean": "higher", "glue_authorized": "higher", "glue_unauthorized": "lower"}
# the non-transferable-learning board (bench.protocols.domain): a cell's top-1 on the source or on a target domain
DOMAIN_METRICS = {"source_top1": "higher", "target_top1": "lower"}
# every metric a reference can hold, hence every key a tolerance may name
CHECK_METRICS = {**LEADERBOARD_METRICS, **FINGERPRINT_METRICS, **UNLEARNABLE_METRICS, **GLUE_METRICS, **DOMAIN_METRICS}
# the boards the built-in protocols rank on ([standard_attacks] keys a suite may name before any protocol is loaded;
# each protocol declares its own: Protocol.boards, and tests/test_protocols.py checks the two agree)
BOARDS = ("input", "model", "baselines", "ownership", "train-on-data", "glue", "domain")
