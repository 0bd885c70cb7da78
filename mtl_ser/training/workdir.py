"""Workdir safety: one run per workdir, and no silent change of config.

`<workdir>/lock` names the process that owns the workdir (pid, host, start);
its mtime is refreshed at every log step. A second process refuses to start
while the owner is alive: on the same host, while its pid exists; on another
host, until the lock has not been refreshed for `stale_after_s`. A lock left by
a killed process is taken over. `<workdir>/config.json` is the config the
workdir was made with; resuming with another config is refused unless asked
for, and the difference is printed either way.
"""

import datetime
import json
import os
import socket

import jax
import ml_collections
from jax.experimental import multihost_utils

from mtl_ser.errors import WorkdirError
from mtl_ser.files import write_json

# Config fields that may change between resumes without changing the run (the
# library fusions change how XLA computes the same step, not what it computes;
# read threads, who makes the same batches, under the same iterator state; the
# device cache, where the same crops are gathered).
RUNTIME_ONLY = (
    "train.progress_bar",
    "train.cpu_library_fusions",
    "data.read_threads",
    "data.device_cache",
    "data.device_cache_max_mb",
)

# Config fields that change what the evaluation of a trained run scores: the
# utterances and how they are cut and normalised, the model, its tasks and
# classes, and which of its states is scored (prefixes of the flat keys).
SCORED = (
    "corpus.",
    "split.",
    "features.",
    "model.",
    "tasks",
    "emotion_classes",
    "regression_loss",
    "data.inputs",
    "data.crop_frames",
    "data.eval_hop_frames",
    "data.normalisation",
    "train.evaluate_at",
    "train.best_metric",
    "train.ema_decay",
)
# Fields that --mode=evaluate takes from the command line: where the data is,
# and how (not what) the evaluation computes.
EVALUATION_RUNTIME = (
    *RUNTIME_ONLY,
    "corpus.root",
    "features.cache_dir",
    "data.eval_batch_size",
    "report.figures",
    "report.gradcam_per_class",
    "report.tsne_perplexity",
)

# Config fields added after workdirs were saved, with the value that gives the
# behaviour from before they existed: a saved config without one reads as if
# it had this value (resume checks, load_config).
ADDED_FIELDS = {
    "train.ema_decay": 0.0,
    "model.deltas": 0,
    "train.evaluate_at": "best",
    "split.cv_validation": True,
    "data.class_weights": "none",
    "model.pool_size": (),
    "data.device_cache": False,
    "data.device_cache_max_mb": 4096.0,
}


# Config fields that no longer exist; a saved config's are dropped: the
# reliability tests' fault injection (now done from the tests, with bad labels).
REMOVED_FIELDS = ("train.nan_step", "train.nan_task")


def upgrade(saved: dict) -> dict:
    """A saved config dict in today's field names: data.normalize (True or
    False, before data.normalisation) reads as data.normalisation "train" or
    "none", and REMOVED_FIELDS are dropped. The dict given is left as it is."""
    saved = dict(saved)
    for key in REMOVED_FIELDS:
        section, field = key.split(".")
        if isinstance(saved.get(section), dict) and field in saved[section]:
            saved[section] = {k: v for k, v in saved[section].items() if k != field}
    data = saved.get("data")
    if not isinstance(data, dict) or "normalize" not in data:
        return saved
    data = dict(data)
    was = data.pop("normalize")
    data.setdefault("normalisation", "train" if was else "none")
    return {**saved, "data": data}


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was trained with (`<workdir>/config.json`), locked.

    Fields newer than the run (workdir.ADDED_FIELDS) get the value of the
    behaviour it was trained with, and renamed ones their new name
    (workdir.upgrade).
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.isdir(workdir):
        raise WorkdirError(f"{workdir}: no such run folder")
    if not os.path.isfile(path):
        raise WorkdirError(
            f"{workdir}: no config.json; is it the --workdir of a training run?"
        )
    try:
        with open(path) as f:
            config = ml_collections.ConfigDict(upgrade(json.load(f)))
    except ValueError as e:
        raise WorkdirError(f"{path}: not a config ({e})") from e
    for key, value in ADDED_FIELDS.items():
        section, field = key.split(".")
        if section in config and field not in config[section]:
            config[section][field] = value
    config.lock()
    return config


class Lock:
    """Holds `<workdir>/lock` (process 0 holds it for all processes)."""

    def __init__(self, workdir: str, *, stale_after_s: float):
        self.path = os.path.join(workdir, "lock")
        self.stale_after_s = stale_after_s
        self.held = False

    def __enter__(self):
        error = ""
        if jax.process_index() == 0:
            try:
                self._acquire()
            except WorkdirError as e:
                error = str(e)
        if jax.process_count() > 1:  # Every process refuses together.
            failed = multihost_utils.broadcast_one_to_all(int(bool(error)))
            if failed and not error:
                error = f"{self.path}: process 0 could not take the workdir lock"
        if error:
            raise WorkdirError(error)
        return self

    def __exit__(self, *exc):
        if self.held:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            self.held = False
        return False

    def refresh(self):
        """Marks the owner alive (the loop calls it at every log step)."""
        if self.held:
            os.utime(self.path)

    def _acquire(self):
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        for _ in range(2):  # Once more after removing a stale lock.
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self._owner()
                why_stale = self._stale(owner)
                if why_stale is None:
                    raise WorkdirError(
                        f"{self.path}: the workdir is in use by pid "
                        f"{owner.get('pid')} on {owner.get('host')} (started "
                        f"{owner.get('started')}); use another --workdir, or stop "
                        "that run. If no run is using it, delete the lock file."
                    ) from None
                print(f"Taking over {self.path}: {why_stale}", flush=True)
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise WorkdirError(f"{self.path}: another process took the lock meanwhile")

    def _owner(self) -> dict:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}  # Half-written by a process killed while writing it.

    def _stale(self, owner: dict) -> "str | None":
        """Why the lock's owner is gone, or None if it may be alive."""
        pid, host = owner.get("pid"), owner.get("host")
        if not isinstance(pid, int) or host is None:
            return "the lock file is unreadable"
        if host == socket.gethostname():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return f"its owner (pid {pid}) is no longer running"
            except PermissionError:
                pass  # Another user's live process.
            return None
        try:
            age = datetime.datetime.now().timestamp() - os.path.getmtime(self.path)
        except FileNotFoundError:
            return "it was removed"
        if age > self.stale_after_s:
            return f"its owner on {host} has not refreshed it for {age:.0f} s"
        return None


def flatten(config: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_difference(old: dict, new: dict) -> list[str]:
    """Lines 'field: old -> new' for every field that differs (sorted); `old`
    is a saved config, read in today's field names (`upgrade`)."""
    old, new = flatten(upgrade(old)), flatten(new)
    lines = []
    for key in sorted(set(old) | set(new)):
        if key in RUNTIME_ONLY:
            continue
        a = old.get(key, ADDED_FIELDS.get(key, "<absent>"))
        b = new.get(key, "<absent>")
        if _normal(a) != _normal(b):
            lines.append(f"{key}: {a!r} -> {b!r}")
    return lines


def scored_difference(saved, given: dict, allowed: tuple = ()) -> list[str]:
    """config_difference's lines (saved -> given) of the SCORED fields, bar the
    EVALUATION_RUNTIME ones and any starting with one of `allowed`."""
    return [
        line
        for line in config_difference(saved.to_dict(), given)
        if line.startswith(SCORED)
        and not line.startswith((*EVALUATION_RUNTIME, *allowed))
    ]


def evaluation_config(workdir: str, saved, given: dict):
    """The config that evaluates the run in `workdir`: its own (`saved`, as
    load_config reads it), with `given`'s EVALUATION_RUNTIME fields.

    Raises:
      WorkdirError: in one line, naming every field of `given` that would
        change what is scored (SCORED) and differs from the run's.
    """
    scored = scored_difference(saved, given)
    if scored:
        raise WorkdirError(
            f"{os.path.join(workdir, 'config.json')}: --mode=evaluate scores the "
            "run as it was trained, and the given config changes what it would "
            f"score (saved -> given): {'; '.join(scored)}. Drop --config: the run's "
            "own is used"
        )
    given = flatten(given)
    with saved.unlocked():
        for key in EVALUATION_RUNTIME:
            if key in given:
                section, field = key.split(".")
                saved[section][field] = given[key]
    return saved


def _normal(value):
    """JSON round trip, so that tuples and lists (and so on) compare equal."""
    return json.loads(json.dumps(value))


def check_config(workdir: str, config: dict, *, allow_change: bool):
    """Refuses a workdir made with another config unless `allow_change`."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        diff = config_difference(json.load(f), config)
    if not diff:
        return
    listing = "\n  ".join(diff)
    if not allow_change:
        raise WorkdirError(
            f"{path}: this workdir was made with another config; differences "
            f"(saved -> now):\n  {listing}\nUse another --workdir, or pass "
            "--allow_config_change to resume with the new config."
        )
    print(f"Resuming with a changed config (saved -> now):\n  {listing}")


def save_config(workdir: str, config: dict):
    """Writes `<workdir>/config.json`."""
    write_json(os.path.join(workdir, "config.json"), config)


def check_writable(folder: str, what: str):
    """Makes `folder` if needed and proves it writable, before any work.

    Raises:
      WorkdirError: naming `what` (the flag) and the folder, when it cannot be
        made or written; a folder this call made is removed again.
    """
    made = not os.path.exists(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        if made:
            remove_if_empty(folder)
        raise WorkdirError(f"{what}={folder}: not writable ({e.strerror})") from None


def remove_if_empty(workdir: str):
    """Removes a workdir that a run refused before writing anything into it."""
    try:
        os.rmdir(workdir)
    except OSError:
        pass  # Not empty, or gone: leave it.
