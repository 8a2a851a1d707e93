"""The CPC model: configs, layer names and shapes, causality, the InfoNCE loss."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from engine.config import ConfigError, ModelConfig, full, preset, small
from engine.model import CPCModel
from tests.models import tiny


def _activation_shapes(model: CPCModel, samples: int) -> dict[str, tuple[int, ...]]:
    with torch.no_grad():
        return {
            k: tuple(v.shape) for k, v in model.eval().activations(torch.randn(2, samples)).items()
        }


def test_small_preset_exposes_every_layer_in_order_as_channel_pitch_time():
    model = CPCModel(small())
    samples = 3 * model.config.front_end.sample_rate
    shapes = _activation_shapes(model, samples)
    assert list(shapes) == [
        "scalogram",
        *[f"enc{i}" for i in range(1, 9)],
        *[f"ar{i}" for i in range(1, 7)],
    ]
    assert list(shapes) == model.layer_names
    frames = samples // model.config.front_end.hop_length + 1
    assert shapes["scalogram"] == (2, 1, 96, frames)
    steps = model.steps_for(samples)
    for name, (channels, pitches) in model.layer_shapes().items():
        assert shapes[name][:3] == (2, channels, pitches), name
    assert shapes["enc8"] == (2, 128, 1, steps)
    assert shapes["ar6"] == (2, 128, 1, steps)


def test_small_preset_meets_the_front_end_requirements():
    front_end = small().front_end
    assert front_end.sample_rate >= 22050
    assert front_end.fmin <= 40
    assert front_end.n_bins / front_end.bins_per_octave >= 7


def test_full_preset_has_the_original_shape_on_a_short_input():
    config = full()
    assert (config.front_end.sample_rate, config.front_end.n_bins) == (44100, 216)
    assert (config.front_end.bins_per_octave, config.front_end.filter_scale) == (24, 0.43)
    assert [b.channels for b in config.encoder] == [8, 16, 32, 64, 128, 256, 512, 512]
    assert (config.prediction_steps, config.prediction_gap) == (16, 4)
    model = CPCModel(config)
    samples = 44100  # one second keeps the test quick
    shapes = _activation_shapes(model, samples)
    for name, (channels, pitches) in model.layer_shapes().items():
        assert shapes[name][1:3] == (channels, pitches), name
    assert shapes["enc8"][2:] == (1, model.steps_for(samples))
    assert shapes["ar9"][1:3] == (256, 1)
    # One encoding step is about 93 ms, as in the original.
    assert config.samples_per_step == 4096


def test_config_round_trips_through_json_exactly():
    for config in (small(), full(), tiny()):
        assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_unknown_or_missing_config_fields_are_refused():
    data = small().to_dict()
    with pytest.raises(ConfigError, match="unknown ModelConfig fields: colour"):
        ModelConfig.from_dict({**data, "colour": "red"})
    with pytest.raises(ConfigError, match="schema"):
        ModelConfig.from_dict({**data, "schema": 99})
    del data["front_end"]
    with pytest.raises(ConfigError, match="incomplete"):
        ModelConfig.from_dict(data)


def test_preset_accepts_a_json_config_file_and_names_a_bad_one(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny().to_dict()))
    assert preset(str(path)) == tiny()
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=str(path)):
        preset(str(path))
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        preset("huge")


def test_autoregressive_output_at_t_never_depends_on_inputs_after_t():
    model = CPCModel(tiny()).train()  # train mode: no batch statistic may leak the future
    steps = 20
    z = torch.randn(3, model.config.encoder_channels, steps, requires_grad=True)
    c = model.context(z)
    for t in (0, 7, 18):
        (grad,) = torch.autograd.grad(c[:, :, t].sum(), z, retain_graph=True)
        assert grad[:, :, t + 1 :].abs().sum() == 0, f"context at {t} sees the future"
        assert grad[:, :, : t + 1].abs().sum() > 0, f"context at {t} sees nothing"


def test_autoregressive_receptive_field_is_what_the_config_says():
    model = CPCModel(tiny()).eval()
    steps, t = 30, 25
    z = torch.randn(1, model.config.encoder_channels, steps, requires_grad=True)
    (grad,) = torch.autograd.grad(model.context(z)[:, :, t].sum(), z)
    seen = (grad[0].abs().sum(dim=0) > 0).nonzero().flatten()
    assert int(seen.min()) == t - model.config.ar_receptive_field + 1


def test_training_mode_uses_batch_statistics_and_dropout():
    model = CPCModel(tiny()).train()
    audio = torch.randn(4, 16000)
    before = model.encoder[0].norm_a.running_mean.clone()
    first, _ = model(audio)
    second, _ = model(audio)
    assert not torch.equal(before, model.encoder[0].norm_a.running_mean)
    assert not torch.allclose(first, second), "dropout is inactive in train mode"
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(audio)[0], model(audio)[0])


def test_cpc_loss_reports_accuracy_per_predicted_step_near_chance_when_untrained():
    torch.manual_seed(0)
    model = CPCModel(tiny()).eval()
    audio = torch.randn(8, 16000 * 2)
    with torch.no_grad():
        result = model.cpc_loss(*model(audio))
    assert result.accuracy.shape == (model.config.prediction_steps,)
    assert result.step_loss.shape == (model.config.prediction_steps,)
    assert torch.isfinite(result.loss)
    steps = model.steps_for(audio.shape[1])
    negatives = 8 * (steps - model.config.prediction_gap - 1)
    # InfoNCE of an uninformed model sits near log(number of candidates).
    assert abs(float(result.step_loss[0]) - torch.log(torch.tensor(float(negatives)))) < 2.0


def test_cpc_loss_refuses_an_input_too_short_to_predict_from():
    model = CPCModel(tiny())
    z = torch.randn(1, model.config.encoder_channels, 3)
    with pytest.raises(ValueError, match="too short"):
        model.cpc_loss(z, model.context(z))


def test_small_preset_stays_small_enough_to_ship():
    parameters = sum(p.numel() for p in CPCModel(small()).parameters())
    assert 0.5e6 < parameters < 3e6


def test_configs_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        small().name = "other"


def test_the_phase_channel_doubles_the_input_and_keeps_gradients_finite_at_silence():
    config = dataclasses.replace(
        tiny(), front_end=dataclasses.replace(tiny().front_end, phase=True)
    )
    model = CPCModel(config).eval()
    silence = torch.zeros(1, 16000, requires_grad=True)
    activations = model.activations(silence)
    assert activations["scalogram"].shape[1:3] == (2, 60)
    (gradient,) = torch.autograd.grad(sum(a.mean() for a in activations.values()), silence)
    assert torch.isfinite(gradient).all()


@pytest.mark.parametrize("padding", ["same", "causal"])
def test_left_context_covers_everything_a_context_vector_depends_on(padding):
    model = CPCModel(dataclasses.replace(tiny(), encoder_time_padding=padding)).eval()
    config = model.config
    steps = 40
    audio = (torch.randn(1, steps * config.samples_per_step) * 0.1).requires_grad_(True)
    t = steps - 3
    (gradient,) = torch.autograd.grad(model(audio)[1][0, :, t].sum(), audio)
    first_seen = int((gradient[0].abs() > 0).nonzero().min())
    step_start = t * config.samples_per_step
    assert first_seen >= step_start - model.left_context_samples()
    # …and is not a gross overestimate.
    assert first_seen <= step_start - model.left_context_samples() // 2


def test_a_causal_encoder_never_sees_audio_after_its_step():
    config = dataclasses.replace(tiny(), encoder_time_padding="causal")
    model = CPCModel(config).eval()
    steps = 12
    audio = (torch.randn(1, steps * config.samples_per_step) * 0.1).requires_grad_(True)
    t = 6
    (gradient,) = torch.autograd.grad(model(audio)[1][0, :, t].sum(), audio)
    last_seen = int((gradient[0].abs() > 0).nonzero().max())
    # Beyond the step's own frames, only the CQT's window reaches ahead.
    longest_filter = int(max(model.scalogram.cqt.filter_lengths))
    assert last_seen < (t + 1) * config.samples_per_step + longest_filter // 2
    same = CPCModel(tiny()).eval()
    (gradient,) = torch.autograd.grad(same(audio)[1][0, :, t].sum(), audio)
    assert int((gradient[0].abs() > 0).nonzero().max()) > last_seen + config.samples_per_step


def test_an_unknown_encoder_padding_is_refused():
    with pytest.raises(ConfigError, match="encoder_time_padding"):
        dataclasses.replace(tiny(), encoder_time_padding="future")
