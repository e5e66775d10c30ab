"""Configs: defaults <- inherited files <- YAML <- overrides; bad keys, types and values fail early, naming the key
(and, for a key in a file, the file and line); old names still read or are refused with the new name."""
import functools
import subprocess
import sys
from pathlib import Path

import pytest

import mrirecon.data.masks  # noqa: F401  (registers the data.mask check)
import mrirecon.models  # noqa: F401  (registers the model.prox check)
import mrirecon.training.strategies  # noqa: F401  (registers the train.strategy check)
from mrirecon.config import ConfigError, config_from_layers, from_dict, load_config, read_config_file, save_config
from mrirecon.models import build_network
from mrirecon.models.convex.fit import read_fit_config
from mrirecon.models.prox import ResNetProx, UNetProx

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def load_shipped(path: Path):
    return read_fit_config(path, [])[0] if path.name.endswith("_fit.yaml") else load_config(path)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(ROOT / "configs").as_posix())
def test_shipped_configs_load_with_every_check(path):
    cfg = load_shipped(path)
    if path.parent.name != "equivariant":  # those are prox settings the equivariance benchmark completes
        assert cfg.name != "experiment"  # every experiment names its runs (not inherited from the default)


@pytest.mark.parametrize("stem,kind,mask,acceleration", [
    ("knee2d", "knee2d", "random", 4), ("brain2d", "brain2d", "random", 8), ("knee3d", "knee3d", "poisson", 8),
    ("cine", "cine", "kyt", 8), ("cine_cmrxrecon", "cine", "cmrxrecon", 8)])
def test_top_level_configs_describe_their_data(stem, kind, mask, acceleration):
    cfg = load_config(ROOT / "configs" / f"{stem}.yaml")
    assert (cfg.name, cfg.data.kind, cfg.data.mask["name"], cfg.data.mask["accelerations"]) == (
        stem, kind, mask, [acceleration])
    assert cfg.data.root.endswith(stem if stem != "cine_cmrxrecon" else "cmrxrecon")


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(ROOT / "configs").as_posix())
def test_shipped_configs_state_only_differences(path):
    layers = read_config_file(path)
    own = dict(layers[-1])
    own.pop("fit", None)
    for layer in layers:
        layer.pop("fit", None)
    inherited = config_from_layers(layers[:-1]).to_dict()
    restated = []
    for key, value in _leaves(own):
        section, _, leaf = key.rpartition(".")
        parent = functools.reduce(lambda d, k: d.get(k, {}) if isinstance(d, dict) else {}, section.split("."),
                                  inherited) if section else inherited
        own_section = functools.reduce(lambda d, k: d[k], section.split("."), own) if section else own
        if leaf != "name" and "name" in own_section and own_section["name"] != parent.get("name"):
            continue  # a section that changes its kind starts afresh: its settings are all stated
        if isinstance(parent, dict) and leaf in parent and parent[leaf] == value:
            restated.append(key)
    assert restated == [], f"{path.name} restates what it inherits"


def test_overrides_merge_into_named_dicts():
    cfg = load_config(None, ["model.prox.channels=12", "train.max_epochs=3", "data.mask.accelerations=[8]"])
    assert cfg.model.prox == {"name": "resnet", "channels": 12, "num_blocks": 2}
    assert cfg.train.max_epochs == 3 and cfg.data.mask["accelerations"] == [8]


def test_changing_prox_kind_drops_old_settings():
    cfg = load_config(None, ["model.prox={name: unet, channels: 8}"])
    assert cfg.model.prox == {"name": "unet", "channels": 8}


@pytest.mark.parametrize(
    "override,key",
    [
        ("model.num_unroll=4", "model.num_unroll"),
        ("model.num_unrolls=0", "model.num_unrolls"),
        ("model.num_unrolls=2.5", "model.num_unrolls"),
        ("model.prox.name=nope", "model.prox.name"),
        ("model.prox.chanels=8", "model.prox"),
        ("train.strategy=magic", "train.strategy"),
        ("train.lr=fast", "train.lr"),
        ("data.mask.accelerations=[0.5]", "data.mask"),
        ("data.mask.name=radial", "data.mask"),
        ("data.kind=ct", "data.kind"),
        ("data.volume=true", "data.volume"),
        ("train.scheduler={step_size: 3}", "train.scheduler.name"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_gleam_modules_must_divide_unrolls():
    with pytest.raises(ConfigError, match="train.num_modules"):
        load_config(None, ["train.strategy=gleam", "model.num_unrolls=8", "train.num_modules=3"])
    assert load_config(None, ["train.strategy=gleam", "model.num_unrolls=8", "train.num_modules=4"])


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(ROOT / "configs" / "matched_memory" / "knee2d_gleam.yaml", ["train.seed=7"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nothere.yaml"):
        load_config(tmp_path / "nothere.yaml")


# ------------------------------------------------------------------ inheritance
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_child_overrides_one_key_and_inherits_the_rest(tmp_path):
    write(tmp_path / "base.yaml", "name: base\ntrain: {lr: 1.0e-3, max_epochs: 5}\nmodel: {num_unrolls: 4}\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\ntrain: {max_epochs: 7}\n")
    cfg = load_config(child)
    assert (cfg.name, cfg.train.lr, cfg.train.max_epochs, cfg.model.num_unrolls) == ("base", 1e-3, 7, 4)


def test_a_grandchild_chain_applies_the_farthest_base_first(tmp_path):
    write(tmp_path / "a.yaml", "train: {lr: 1.0e-3, max_epochs: 5, seed: 1}\n"
                               "model: {prox: {name: resnet, channels: 8, num_blocks: 1}}\n")
    write(tmp_path / "sub" / "b.yaml",
          "base: ../a.yaml\ntrain: {max_epochs: 6, seed: 2}\nmodel: {prox: {channels: 4}}\n")
    c = write(tmp_path / "sub" / "deeper" / "c.yaml", "base: ../b.yaml\ntrain: {seed: 3}\n")
    cfg = load_config(c, ["train.lr=2e-3"])
    assert (cfg.train.lr, cfg.train.max_epochs, cfg.train.seed) == (2e-3, 6, 3)
    assert cfg.model.prox == {"name": "resnet", "channels": 4, "num_blocks": 1}


def test_a_list_of_bases_applies_in_order(tmp_path):
    write(tmp_path / "data.yaml", "data: {kind: brain2d, root: somewhere}\ntrain: {seed: 1}\n")
    write(tmp_path / "schedule.yaml", "train: {seed: 2, max_epochs: 3}\n")
    cfg = load_config(write(tmp_path / "c.yaml", "base: [data.yaml, schedule.yaml]\n"))
    assert (cfg.data.kind, cfg.data.root, cfg.train.seed, cfg.train.max_epochs) == ("brain2d", "somewhere", 2, 3)


def test_an_inheritance_cycle_is_refused_naming_the_files(tmp_path):
    a = write(tmp_path / "a.yaml", "base: b.yaml\n")
    b = write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match=rf"config inheritance cycle: {a} -> {b} -> {a}$"):
        load_config(a)


def test_an_unknown_key_in_a_child_is_named_with_its_file_and_line(tmp_path):
    write(tmp_path / "base.yaml", "train: {lr: 1.0e-3}\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\nmodel:\n  num_unrolls: 4\n  num_unroll: 2\n")
    with pytest.raises(ConfigError, match=rf"^{child}, line 4: unknown config key 'model\.num_unroll'"):
        load_config(child)


def test_a_wrong_type_in_a_file_is_named_with_its_file_and_line(tmp_path):
    path = write(tmp_path / "c.yaml", "train:\n  lr: 1.0e-3\n  max_epochs: many\n")
    with pytest.raises(ConfigError, match=rf"^{path}, line 3: train\.max_epochs: expected an integer"):
        load_config(path)


def test_a_missing_base_is_named_with_the_file_that_wants_it(tmp_path):
    child = write(tmp_path / "child.yaml", "base: nothere.yaml\n")
    missing = tmp_path / "nothere.yaml"
    with pytest.raises(ConfigError, match=rf"config file not found: {missing} \(the base of {child}\)"):
        load_config(child)


def test_a_base_that_is_not_a_file_name_is_refused_with_its_line(tmp_path):
    path = write(tmp_path / "c.yaml", "name: x\nbase: {file: a.yaml}\n")
    with pytest.raises(ConfigError, match=rf"^{path}, line 2: base: expected a config file name"):
        load_config(path)


# ------------------------------------------------------------------ old names
def test_old_mask_type_key_reads_as_name(tmp_path):
    path = write(tmp_path / "old.yaml",
                 "data:\n  mask: {type: equispaced, center_fractions: [0.08], accelerations: [4]}\n")
    assert load_config(path).data.mask == {"name": "equispaced", "center_fractions": [0.08], "accelerations": [4]}
    assert load_config(None, ["data.mask.type=poisson", "data.mask.accelerations=[8]"]).data.mask == {
        "name": "poisson", "accelerations": [8]}


def test_old_and_new_mask_key_together_are_refused(tmp_path):
    path = write(tmp_path / "both.yaml", "data:\n  mask:\n    name: random\n    type: random\n")
    with pytest.raises(ConfigError, match=rf"^{path}, line 4: data\.mask\.type is the old name of data\.mask\.name"):
        load_config(path)


def test_ambiguous_old_cg_iters_of_mel_is_refused_with_the_new_name():
    with pytest.raises(ConfigError, match=r"train\.invertible\.cg_iters was renamed: write "
                                          r"train\.invertible\.inverse_cg_iters"):
        load_config(None, ["train.invertible={cg_iters: 20}"])
    assert load_config(None, ["train.invertible={inverse_cg_iters: 20}"]).train.invertible == {"inverse_cg_iters": 20}


def test_a_checkpoint_config_with_old_names_loads_with_the_new_ones():
    old = {"name": "old", "data": {"mask": {"type": "random", "center_fractions": [0.08], "accelerations": [4]}},
           "model": {"num_unrolls": 2, "prox": {"name": "unet", "base_channels": 4, "depth": 1}}}
    cfg = from_dict(old)
    assert cfg.data.mask["name"] == "random" and cfg.model.prox == {"name": "unet", "channels": 4, "num_blocks": 1}
    net = build_network(cfg)
    assert isinstance(net.unrolls[0].prox, UNetProx) and net.unrolls[0].prox.depth == 1


def test_old_scale_equivariant_num_layers_reads_as_num_blocks():
    cfg = load_config(None, ["model.prox={name: scale_equivariant, channels: 2, num_layers: 3}"])
    assert cfg.model.prox == {"name": "scale_equivariant", "channels": 2, "num_blocks": 3}


# ------------------------------------------------------------------ layering
def test_checking_a_prox_config_builds_no_prox(monkeypatch):
    built = []
    original = ResNetProx.__init__

    @functools.wraps(original)  # the signature the registry checks stays the constructor's
    def counting(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ResNetProx, "__init__", counting)
    cfg = load_config(None, ["model.num_unrolls=3", "model.prox.channels=4"])
    assert built == []
    build_network(cfg)
    assert len(built) == 3


def test_config_module_imports_nothing_of_the_models_or_data():
    code = "import sys, mrirecon.config; print(sorted(m for m in sys.modules if m.startswith('mrirecon')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['mrirecon', 'mrirecon.config']"
