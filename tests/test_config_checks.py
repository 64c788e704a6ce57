"""Configuration mistakes end before training with a message naming the key and the valid values."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import REPO, run_script
from mode_ssm.models.build import build_model, model_components
from mode_ssm.models.ssm import cuda_kernel_available, selective_scan
from mode_ssm.training.curriculum import CurriculumError, plan_curriculum
from mode_ssm.training.optim import parameter_groups
from mode_ssm.training.trainer import check_config

MODE_SSM = ("day_layers", "preprocessor", "encoder", "mode_head", "flow_bridge", "ctc_head", "rnnt")
GRU = ("day_layers", "encoder", "ctc_head")


def train_config(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_each_model_trains_its_own_curriculum():
    stages = check_config(train_config())
    assert [s.name for s in stages] == ["ctc_warmup", "joint_train", "mode_train", "denoise_train"]
    assert stages[1].loss_weights == {"ctc": 0.5, "rnnt": 0.5, "mode": 0.1, "denoise": 0.0}
    gru = check_config(train_config("model=gru_baseline"))
    assert [(s.name, s.components, s.active_losses) for s in gru] == [("ctc", GRU, ["ctc"])]
    # a user may still choose: MODE-SSM trained with CTC alone
    only_ctc = check_config(train_config("curriculum=mode_ssm_ctc"))
    assert [(s.name, s.active_losses) for s in only_ctc] == [("ctc_warmup", ["ctc"]), ("ctc_day_layers", ["ctc"])]
    assert "preprocessor" in only_ctc[0].components
    # the day layers stay at the identity until CTC has found its alignment
    assert "day_layers" not in only_ctc[0].components and "day_layers" in only_ctc[1].components
    assert "day_layers" not in stages[0].components and "day_layers" in stages[1].components


@pytest.mark.parametrize("overrides, message", [
    (["training.stages.0.components=[encodr]"], r"unknown component\(s\) \['encodr'\].*valid: \['day_layers'"),
    (["+training.stages.1.loss_weights.rnn_t=0.5"], r"unknown loss\(es\) \['rnn_t'\]; valid: \['ctc', 'rnnt'"),
    (["model=gru_baseline", "curriculum=four_stage"], r"unknown component\(s\) \['preprocessor'\] for gru_baseline"),
    (["model.flow_bridge=false"], r"denoise_train.*unknown component\(s\) \['flow_bridge'\]"),
    (["training.stages.2.loss_weights.ctc=-1"], r"loss_weights.ctc must be a number >= 0"),
    (["training.stages.3.loss_weights.denoise=0"], r"every loss weight is 0"),
    (["training.stages.0.epochs=1.5"], r"epochs must be an integer >= 0"),
    (["preprocessor.num_channels=300"], r"preprocessor.num_channels=300: must be one of \[256, 512\]"),
    (["+model.num_channels=256"], r"model.num_channels is not a model option.*preprocessor.num_channels"),
    (["+model.d_modle=64"], r"unknown key\(s\) \['model.d_modle'\]"),
    (["model.norm=batch"], r"model=mode_ssm: norm must be one of"),
    (["model.head_dim=30"], r"not a multiple of head_dim = 30"),
    (["data.validate=fulll"], r"data.validate=.fulll.: must be one of \[.full., .metadata., .none.\]"),
    (["device=gpu"], r"device=.gpu.: must be one of"),
    (["training.stages.0.components=[rnnt]"], r"trains \[.rnnt.\], which none of its losses \[.ctc.\] reaches"),
    # the typed schema (training/schema.py): ranges, choices and keys nobody reads
    (["training.batch_size=-4"], r"^training.batch_size=-4: must be >= 1$"),
    (["data.on_bad_session=ignore"], r"^data.on_bad_session='ignore': must be one of \['error', 'skip'\]$"),
    (["training.optimizer.betas=[0.9,1.5]"], r"training.optimizer.betas\[1\]=1.5: must be < 1"),
    (["training.max_steps=0"], r"training.max_steps=0: must be >= 1"),
    (["training.time_budget_minutes=-1"], r"training.time_budget_minutes=-1.0: must be > 0"),
    (["data.sim_preset=huge"], r"data.sim_preset='huge': must be one of \['quick', 'mini', 'bench', 'full'\]"),
    (["+training.foo=1"], r"training.foo is not an option \(it would be ignored\); the options of training are"),
    (["+seeds=1"], r"seeds is not an option"),
])
def test_bad_configurations_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        check_config(train_config(*overrides))


@pytest.mark.parametrize("override, key, kind", [
    ("training.batch_size=abc", "training.batch_size", "'abc' of type 'str' could not be converted to Integer"),
    ("augmentation.smooth_std=wide", "augmentation.smooth_std", "could not be converted to Float"),
    ("amp=maybe", "amp", "'maybe' is not a valid bool"),
])
def test_values_of_the_wrong_type_fail_while_composing_naming_the_key(override, key, kind):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as err:
        train_config(override)
    said = f"{err.value} {err.value.__cause__}"
    assert f"full_key: {key}" in said and kind in said


def test_evaluation_commands_check_their_options_before_loading_anything():
    from mode_ssm.evaluation.evaluate import run_evaluation
    from mode_ssm.evaluation.submission import make_submission
    from mode_ssm.evaluation.tuning import tune

    def compose_(name, *overrides):
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides))

    with pytest.raises(ValueError, match=r"^checkpoint is required: give it on the command line"):
        run_evaluation(compose_("evaluate"), REPO)
    with pytest.raises(ValueError, match=r"^split='train': must be one of \['val', 'test'\]"):
        run_evaluation(compose_("evaluate", "checkpoint=none.pt", "split=train"), REPO)
    with pytest.raises(ValueError, match=r"^rnnt.beam=0: must be >= 1"):
        run_evaluation(compose_("evaluate", "checkpoint=none.pt", "rnnt.beam=0"), REPO)
    with pytest.raises(ValueError, match=r"^data.on_bad_session='ignore'"):
        make_submission(compose_("make_submission", "checkpoint=none.pt", "data.on_bad_session=ignore"), REPO)
    with pytest.raises(ValueError, match=r"^split='test': must be one of \['val'\]"):
        tune(compose_("tune_decoder", "checkpoint=none.pt", "split=test"), REPO, None)
    with pytest.raises(ValueError, match=r"^grid.beam\[1\]=0: must be >= 1"):
        tune(compose_("tune_decoder", "checkpoint=none.pt", "grid.beam=[8,0]"), REPO, None)


def test_plan_rejects_what_the_model_lacks_and_never_filters():
    stage = {"name": "s", "epochs": 1, "components": ["day_layers", "encoder", "ctc_head"],
             "loss_weights": {"ctc": 1.0, "rnnt": 0.5}}
    with pytest.raises(CurriculumError, match=r"loss rnnt needs the rnnt, which gru_baseline lacks"):
        plan_curriculum([stage], GRU, "gru_baseline")
    ok = plan_curriculum([stage], MODE_SSM, "mode_ssm")[0]
    assert ok.components == ("day_layers", "encoder", "ctc_head") and ok.active_losses == ["ctc", "rnnt"]
    with pytest.raises(CurriculumError, match="unknown key"):
        plan_curriculum([{**stage, "loss": {}}], MODE_SSM, "mode_ssm")
    with pytest.raises(CurriculumError, match="non-empty list"):
        plan_curriculum([], MODE_SSM, "mode_ssm")


def test_components_follow_the_model_config():
    small = OmegaConf.load(REPO / "configs" / "model" / "mode_ssm_small.yaml")
    assert model_components(small) == MODE_SSM
    assert model_components(OmegaConf.merge(small, {"flow_bridge": False})) == tuple(c for c in MODE_SSM
                                                                                     if c != "flow_bridge")
    assert model_components(OmegaConf.load(REPO / "configs" / "model" / "gru_small.yaml")) == GRU


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["training.stages.0.components=[encodr]"], "unknown component(s) ['encodr']"),
    (["preprocessor.num_channels=300"], "must be one of [256, 512]"),
])
def test_train_script_exits_before_reading_data(tmp_path, args, message):
    # the data root does not exist: the command must fail on the configuration, not on the data
    proc = run_script("train.py", ["data.data_root=/nonexistent/data", *args, f"hydra.run.dir={tmp_path}/run"],
                      tmp_path, expect_rc=2)
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_curriculum_file_with_a_misspelt_loss_fails(tmp_path):
    cur = tmp_path / "configs" / "curriculum"
    cur.mkdir(parents=True)
    (cur / "mine.yaml").write_text("# @package training\nstages:\n  - name: joint\n    epochs: 1\n"
                                   "    components: [encoder, rnnt]\n    loss_weights: {rnn_t: 0.5}\n")
    proc = run_script("train.py", [f"hydra.searchpath=[file://{tmp_path / 'configs'}]", "curriculum=mine",
                                   "data.data_root=/nonexistent/data", f"hydra.run.dir={tmp_path}/run"],
                      tmp_path, expect_rc=2)
    assert "unknown loss(es) ['rnn_t']" in proc.stderr


def test_weight_decay_spares_ssm_dynamics_norms_biases_and_day_layers():
    small = OmegaConf.load(REPO / "configs" / "model" / "mode_ssm_small.yaml")
    model = build_model(small, n_days=2, n_channels=512)
    groups = parameter_groups(model, model.parameters(), 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    spared = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert decayed | spared == set(names.values()) and not decayed & spared
    for leaf in ("A_log", "D", "dt_bias"):
        assert any(n.endswith("." + leaf) for n in spared) and not any(n.endswith("." + leaf) for n in decayed)
    assert {"day_layers.weights.0", "day_layers.biases.1", "preprocessor.gate_logits", "encoder.final_norm.weight",
            "encoder.layers.0.norm.weight", "ctc_head.proj.bias"} <= spared
    assert {"encoder.layers.0.forward_block.in_proj.weight", "preprocessor.stem.weight", "ctc_head.proj.weight",
            "rnnt.joiner.out.weight"} <= decayed
    # and AdamW really leaves a spared parameter's value alone where its gradient is zero
    opt = torch.optim.AdamW(groups, lr=0.1)
    a_log = model.encoder.layers[0].forward_block.A_log
    w = model.ctc_head.proj.weight
    before_a, before_w = a_log.detach().clone(), w.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(a_log, before_a)
    assert torch.allclose(w, before_w * (1 - 0.1 * 0.01))


@pytest.mark.skipif(cuda_kernel_available(), reason="the kernel runs here")
def test_use_cuda_kernel_true_fails_loudly_without_the_kernel():
    small = OmegaConf.load(REPO / "configs" / "model" / "mode_ssm_small.yaml")
    with pytest.raises(RuntimeError, match="use_cuda_kernel=true but"):
        build_model(OmegaConf.merge(small, {"use_cuda_kernel": True}), n_days=1, n_channels=512)
    x = torch.zeros(1, 8, 2, 4)
    with pytest.raises(RuntimeError, match="use_cuda_kernel=true but"):
        selective_scan(x, torch.ones(1, 8, 2), -torch.ones(2), torch.zeros(1, 8, 1, 3), torch.zeros(1, 8, 1, 3),
                       chunk_size=4, use_cuda_kernel=True)
    # auto falls back to the pure scan, as documented
    y = selective_scan(x, torch.ones(1, 8, 2), -torch.ones(2), torch.zeros(1, 8, 1, 3), torch.zeros(1, 8, 1, 3),
                       chunk_size=4, use_cuda_kernel="auto")
    assert y.shape == x.shape


def test_minimum_bins_follow_each_models_own_output_lengths():
    from mode_ssm.data.t15 import ctc_min_time_steps
    from mode_ssm.models.build import MinimumBins

    ssm = build_model(OmegaConf.load(REPO / "configs" / "model" / "mode_ssm_small.yaml"), n_days=1, n_channels=512)
    gru = build_model(OmegaConf.load(REPO / "configs" / "model" / "gru_small.yaml"), n_days=1, n_channels=512)
    for n in (1, 2, 7, 40):
        assert MinimumBins(ssm)(n) == (n - 1) * 4 + 8  # stem kernel 8, downsample 4
        assert MinimumBins(gru)(n) == ctc_min_time_steps(list(range(1, n + 1))) == (n - 1) * 4 + 14  # the official 14/4 patching


def test_an_optimizer_state_saved_before_weight_decay_groups_resumes_into_them():
    from mode_ssm.training.trainer import _regrouped

    small = OmegaConf.load(REPO / "configs" / "model" / "mode_ssm_small.yaml")
    model = build_model(OmegaConf.merge(small, {"d_model": 32, "head_dim": 16, "n_layers": 1}), n_days=1,
                        n_channels=512)
    params = [p for p in model.encoder.parameters()]
    grads = [torch.randn_like(p) for p in params]

    def step(opt):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()

    old = torch.optim.AdamW(params, lr=0.01, weight_decay=0.0)  # the layout checkpoints had before
    step(old)
    saved = old.state_dict()
    new = torch.optim.AdamW(parameter_groups(model, params, 0.0), lr=0.01)
    assert len(new.param_groups) == 2
    new.load_state_dict(_regrouped(saved, new, params))
    for p in params:  # every parameter found its own moments again
        assert torch.equal(new.state[p]["exp_avg"], old.state[p]["exp_avg"])
        assert torch.equal(new.state[p]["exp_avg_sq"], old.state[p]["exp_avg_sq"])
    assert _regrouped(new.state_dict(), new, params)["param_groups"][0]["params"] == \
        new.state_dict()["param_groups"][0]["params"]  # the current layout passes through
