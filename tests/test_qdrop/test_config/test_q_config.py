"""q_config YAML loading: the published config, root: inheritance, and errors naming key, file and allowed values."""

import pytest
import torch
import yaml

from mmdet.utils import UserError
from qdrop.config.errors import QConfigError
from qdrop.config.q_config import QConfig, ReconConfig, load_q_config
from qdrop.quantization import QuantizerConfig

PUBLISHED = {
    "a_qconfig": {
        "quantizer": "LSQFakeQuantize",
        "observer": "AvgMSEFastObserver",
        "bit": 4,
        "symmetric": False,
        "ch_axis": -1,
    },
    "w_qconfig": {
        "quantizer": "AdaRoundFakeQuantize",
        "observer": "MSEObserver",
        "bit": 2,
        "symmetric": False,
        "ch_axis": 0,
    },
    "calibrate": 256,
    "recon": {
        "batch_size": 2,
        "scale_lr": 4.0e-5,
        "warm_up": 0.2,
        "weight": 0.01,
        "iters": 20000,
        "b_range": [20, 2],
        "keep_gpu": True,
        "round_mode": "learned_hard_sigmoid",
        "drop_prob": 0.5,
    },
}

PUBLISHED_TEXT = """\
a_qconfig:
    quantizer: LSQFakeQuantize
    observer: AvgMSEFastObserver
    bit: 4
    symmetric: False
    ch_axis: -1
w_qconfig:
    quantizer: AdaRoundFakeQuantize
    observer: MSEObserver
    bit: 2
    symmetric: False
    ch_axis: 0
calibrate: 256
recon:
    batch_size: 2
    scale_lr: 4.0e-5
    warm_up: 0.2
    weight: 0.01
    iters: 20000
    b_range: [20, 2]
    keep_gpu: True
    round_mode: learned_hard_sigmoid
    drop_prob: 0.5
"""


def _write(path, data):
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_published_config_loads(tmp_path):
    cfg = load_q_config(_write(tmp_path / "config.yaml", PUBLISHED_TEXT))
    assert isinstance(cfg.a_qconfig, QuantizerConfig) and isinstance(cfg.recon, ReconConfig)
    assert cfg.a_qconfig.to_dict() == PUBLISHED["a_qconfig"] and cfg.w_qconfig.to_dict() == PUBLISHED["w_qconfig"]
    assert cfg.calibrate == 256 and cfg.quant_head is False
    assert cfg.recon.scale_lr == pytest.approx(4e-5)
    assert cfg.recon.b_range == (20.0, 2.0)
    assert cfg.recon.cache_dtype == "float32" and cfg.recon.cache_torch_dtype == torch.float32
    assert cfg.recon.round_lr == pytest.approx(1e-3)
    assert cfg.recon.fast is True and cfg.recon.compile is False and cfg.recon.amp is None


def test_to_dict_round_trips_through_yaml(tmp_path):
    cfg = load_q_config(_write(tmp_path / "config.yaml", PUBLISHED_TEXT))
    written = yaml.safe_dump(cfg.to_dict())
    assert load_q_config(_write(tmp_path / "again.yaml", written)) == cfg
    assert cfg.to_dict()["recon"]["b_range"] == [20.0, 2.0]


def test_speed_switches_are_optional_and_checked(tmp_path):
    cfg = load_q_config(_write(tmp_path / "amp.yaml", _with("recon", "amp", "bfloat16")))
    assert cfg.recon.amp == "bfloat16" and cfg.recon.amp_torch_dtype == torch.bfloat16
    cfg = load_q_config(_write(tmp_path / "slow.yaml", _with("recon", "fast", False)))
    assert cfg.recon.fast is False


def test_root_inheritance_is_resolved_relative_to_the_file(tmp_path):
    _write(tmp_path / "config.yaml", PUBLISHED_TEXT)
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "mid.yaml", {"root": "../config.yaml", "w_qconfig": {"bit": 4}})
    child = _write(tmp_path / "sub" / "w4a4.yaml", {"root": "mid.yaml", "recon": {"cache_dtype": "bfloat16"}})
    cfg = load_q_config(child)
    assert cfg.w_qconfig.bit == 4 and cfg.w_qconfig.quantizer == "AdaRoundFakeQuantize"
    assert cfg.recon.cache_dtype == "bfloat16" and cfg.recon.drop_prob == 0.5
    assert "root" not in cfg.to_dict()


def test_root_cycle_is_an_error(tmp_path):
    _write(tmp_path / "a.yaml", {"root": "b.yaml"})
    _write(tmp_path / "b.yaml", {"root": "a.yaml"})
    with pytest.raises(ValueError, match="cycle"):
        load_q_config(tmp_path / "a.yaml")


def _with(section, key, value):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PUBLISHED.items()}
    if section is None:
        data[key] = value
    elif value is KeyError:
        del data[section][key]
    else:
        data[section][key] = value
    return data


@pytest.mark.parametrize(
    "section,key,value,match",
    [
        ("w_qconfig", "quantizer", "RoundQuantize", r"w_qconfig\.quantizer.*allowed values: FixedFakeQuantize"),
        ("a_qconfig", "observer", "KLObserver", r"a_qconfig\.observer.*allowed values: MinMaxObserver"),
        ("a_qconfig", "bit", 1, r"a_qconfig\.bit.*2\.\.8"),
        ("w_qconfig", "bit", 16, r"w_qconfig\.bit.*2\.\.8"),
        ("w_qconfig", "ch_axis", -3, r"w_qconfig\.ch_axis.*-1"),
        ("a_qconfig", "symmetric", KeyError, r"a_qconfig\.symmetric: missing key.*ch_axis"),
        ("recon", "drop_prob", 0.0, r"recon\.drop_prob.*\(0, 1\]"),
        ("recon", "drop_prob", 1.5, r"recon\.drop_prob.*\(0, 1\]"),
        ("recon", "round_mode", "nearest", r"recon\.round_mode.*learned_hard_sigmoid"),
        ("recon", "cache_dtype", "int8", r"recon\.cache_dtype.*float32, float16, bfloat16"),
        ("recon", "iters", KeyError, r"recon\.iters: missing key"),
        ("recon", "round_lr", 0.0, r"recon\.round_lr.*a number in \(0, inf\)"),
        ("recon", "lr", 0.1, r"recon\.lr: unknown key.*batch_size"),
        ("recon", "amp", "float16", r"recon\.amp.*allowed values: bfloat16, null"),
        ("recon", "compile", "yes", r"recon\.compile.*true, false"),
        ("recon", "fast", 1, r"recon\.fast.*true, false"),
        (None, "calibration", 5, r"calibration: unknown key.*a_qconfig"),
        (None, "quant_head", "yes", r"quant_head.*true, false"),
    ],
)
def test_bad_values_name_key_file_and_allowed_values(tmp_path, section, key, value, match):
    path = _write(tmp_path / "bad.yaml", _with(section, key, value))
    with pytest.raises(ValueError, match=match) as info:
        load_q_config(path)
    assert "bad.yaml" in str(info.value)


def test_missing_section_and_dict_source():
    data = {k: v for k, v in PUBLISHED.items() if k != "recon"}
    with pytest.raises(ValueError, match=r"<dict>: recon: missing key"):
        QConfig.from_mapping(data)
    assert QConfig.from_mapping(PUBLISHED).quant_head is False


def test_quantizer_config_validates_and_builds():
    cfg = QuantizerConfig.from_mapping(PUBLISHED["w_qconfig"], "w_qconfig")
    quantizer = cfg.build()
    assert type(quantizer).__name__ == "AdaRoundFakeQuantize" and quantizer.bit == 2 and quantizer.ch_axis == 0
    assert QuantizerConfig.from_mapping(cfg) is cfg
    with pytest.raises(ValueError, match=r"w_qconfig\.bits: unknown key"):
        QuantizerConfig.from_mapping({**PUBLISHED["w_qconfig"], "bits": 2}, "w_qconfig")


@pytest.mark.parametrize(
    "text, match",
    [
        ('extra_config:\n  w_qscheme: !!python/object/apply:os.system ["touch {marker}"]\n', "python/object/apply"),
        ("extra_config: [unclosed\n", "not a YAML file of plain data"),
    ],
)
def test_q_config_that_is_not_plain_yaml_data_is_refused_and_nothing_runs(tmp_path, text, match):
    marker = tmp_path / "ran"
    path = tmp_path / "q.yaml"
    path.write_text(text.format(marker=marker))
    with pytest.raises(QConfigError, match=match) as raised:
        load_q_config(str(path))
    assert isinstance(raised.value, UserError) and str(path) in str(raised.value)
    assert not marker.exists()
