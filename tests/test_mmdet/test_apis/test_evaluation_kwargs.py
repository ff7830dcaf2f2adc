"""The evaluation-hook key filter shared by the training loop, tools/test.py and the quantization run."""

from mmengine.config import Config

from mmdet.apis import evaluation_kwargs


def test_hook_keys_are_dropped_and_dataset_keys_kept():
    cfg = Config(
        dict(
            evaluation=dict(
                interval=2, start=1, save_best="auto", rule="greater", gpu_collect=True, metric="bbox", classwise=True
            )
        )
    )
    assert evaluation_kwargs(cfg) == {"metric": "bbox", "classwise": True}
    assert evaluation_kwargs(cfg, ["bbox", "proposal"]) == {"metric": ["bbox", "proposal"], "classwise": True}
    assert cfg.evaluation.interval == 2  # the config is left as it was


def test_missing_evaluation_section():
    assert evaluation_kwargs(Config(dict())) == {}
    assert evaluation_kwargs(Config(dict(evaluation=None)), ["bbox"]) == {"metric": ["bbox"]}
