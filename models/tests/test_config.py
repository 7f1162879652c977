"""Run configs: every shipped config loads; bad values are refused naming the file and the field."""

import pytest

from vimgeo.config import CONFIG_DIR, load_config, parse_override


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    cfg = load_config(str(path))
    assert cfg.name


def test_ablation_inherits_paper_and_overrides_one_thing():
    paper = load_config("paper")
    abl = load_config("ablation-separate-weights")
    assert paper.share_weights and not abl.share_weights
    assert abl.losses == paper.losses and abl.img_size == paper.img_size == 384
    assert load_config("ablation-no-pretrain").pretrained is None
    assert load_config("ablation-dim-768").proj_dim == 768


def test_overrides_are_parsed_as_toml_values():
    assert parse_override("lr=3e-4") == ("lr", 3e-4)
    assert parse_override("losses={infonce=1.0}") == ("losses", {"infonce": 1.0})
    assert parse_override("data=/some/path") == ("data", "/some/path")
    cfg = load_config("paper", ["img_size=224", "losses={infonce=1.0,dice=0.5}"])
    assert cfg.img_size == 224 and cfg.losses == {"infonce": 1.0, "dice": 0.5}


@pytest.mark.parametrize(
    "override, field",
    [
        ('backbone="huge"', "backbone"),
        ("img_size=100", "img_size"),
        ("losses={focal=1.0}", "losses"),
        ('augmentation="randaug"', "augmentation"),
        ("batch_size=1", "batch_size"),
        ("nonsense=1", "nonsense"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ValueError, match=field):
        load_config("paper", [override])


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="paper"):
        load_config("no-such-config")
