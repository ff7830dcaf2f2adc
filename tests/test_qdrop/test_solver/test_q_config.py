"""q_config YAML loading: the seed config, root: inheritance, and errors naming key, file and allowed values."""
import pytest
import yaml

from qdrop.solver.q_config import load_q_config, validate_q_config

SEED = {
    'a_qconfig': {'quantizer': 'LSQFakeQuantize', 'observer': 'AvgMSEFastObserver', 'bit': 4, 'symmetric': False,
                  'ch_axis': -1},
    'w_qconfig': {'quantizer': 'AdaRoundFakeQuantize', 'observer': 'MSEObserver', 'bit': 2, 'symmetric': False,
                  'ch_axis': 0},
    'calibrate': 256,
    'recon': {'batch_size': 2, 'scale_lr': 4.0e-5, 'warm_up': 0.2, 'weight': 0.01, 'iters': 20000,
              'b_range': [20, 2], 'keep_gpu': True, 'round_mode': 'learned_hard_sigmoid', 'drop_prob': 0.5},
}

SEED_TEXT = """\
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


def test_seed_config_loads(tmp_path):
    cfg = load_q_config(_write(tmp_path / 'config.yaml', SEED_TEXT))
    assert cfg['a_qconfig'] == SEED['a_qconfig'] and cfg['w_qconfig'] == SEED['w_qconfig']
    assert cfg['calibrate'] == 256
    assert cfg['recon']['scale_lr'] == pytest.approx(4e-5)
    assert cfg['recon']['b_range'] == [20, 2]
    assert cfg['recon']['cache_dtype'] == 'float32'
    assert cfg['recon']['round_lr'] == pytest.approx(1e-3)


def test_root_inheritance_is_resolved_relative_to_the_file(tmp_path):
    _write(tmp_path / 'config.yaml', SEED_TEXT)
    (tmp_path / 'sub').mkdir()
    _write(tmp_path / 'sub' / 'mid.yaml', {'root': '../config.yaml', 'w_qconfig': {'bit': 4}})
    child = _write(tmp_path / 'sub' / 'w4a4.yaml', {'root': 'mid.yaml', 'recon': {'cache_dtype': 'bfloat16'}})
    cfg = load_q_config(child)
    assert cfg['w_qconfig']['bit'] == 4 and cfg['w_qconfig']['quantizer'] == 'AdaRoundFakeQuantize'
    assert cfg['recon']['cache_dtype'] == 'bfloat16' and cfg['recon']['drop_prob'] == 0.5
    assert 'root' not in cfg


def test_root_cycle_is_an_error(tmp_path):
    _write(tmp_path / 'a.yaml', {'root': 'b.yaml'})
    _write(tmp_path / 'b.yaml', {'root': 'a.yaml'})
    with pytest.raises(ValueError, match='cycle'):
        load_q_config(tmp_path / 'a.yaml')


def _with(section, key, value):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in SEED.items()}
    if section is None:
        data[key] = value
    elif value is KeyError:
        del data[section][key]
    else:
        data[section][key] = value
    return data


@pytest.mark.parametrize('section,key,value,match', [
    ('w_qconfig', 'quantizer', 'RoundQuantize', r'w_qconfig\.quantizer.*allowed values: FixedFakeQuantize'),
    ('a_qconfig', 'observer', 'KLObserver', r'a_qconfig\.observer.*allowed values: MinMaxObserver'),
    ('a_qconfig', 'bit', 1, r'a_qconfig\.bit.*2\.\.8'),
    ('w_qconfig', 'bit', 16, r'w_qconfig\.bit.*2\.\.8'),
    ('w_qconfig', 'ch_axis', -3, r'w_qconfig\.ch_axis.*-1'),
    ('a_qconfig', 'symmetric', KeyError, r'a_qconfig\.symmetric: missing key.*ch_axis'),
    ('recon', 'drop_prob', 0.0, r'recon\.drop_prob.*\(0, 1\]'),
    ('recon', 'drop_prob', 1.5, r'recon\.drop_prob.*\(0, 1\]'),
    ('recon', 'round_mode', 'nearest', r'recon\.round_mode.*learned_hard_sigmoid'),
    ('recon', 'cache_dtype', 'int8', r'recon\.cache_dtype.*float32, float16, bfloat16'),
    ('recon', 'iters', KeyError, r'recon\.iters: missing key'),
    ('recon', 'round_lr', 0.0, r'recon\.round_lr.*a number in \(0, inf\)'),
    ('recon', 'lr', 0.1, r'recon\.lr: unknown key.*batch_size'),
    (None, 'calibration', 5, r'calibration: unknown key.*a_qconfig'),
])
def test_bad_values_name_key_file_and_allowed_values(tmp_path, section, key, value, match):
    path = _write(tmp_path / 'bad.yaml', _with(section, key, value))
    with pytest.raises(ValueError, match=match) as info:
        load_q_config(path)
    assert 'bad.yaml' in str(info.value)


def test_missing_section_and_dict_source():
    data = {k: v for k, v in SEED.items() if k != 'recon'}
    with pytest.raises(ValueError, match=r'<dict>: recon: missing key'):
        validate_q_config(data)
    assert validate_q_config(SEED)['quant_head'] is False
