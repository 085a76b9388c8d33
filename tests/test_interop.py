"""Moving models between ddpm_nb and diffusers (chapter 12), offline: nothing is downloaded.

- Import: a `UNet2DModel` in the released CIFAR-10 configuration (full width) and in the 256×256 layout (narrowed, at
  64×64), with random weights, saved with `save_pretrained` and read by `load_diffusers`, computes the same function
  in float32 (1e-4 of the output's scale) and in float64 (1e-10; both networks get the same time embedding there,
  since diffusers computes it in float32 whatever the dtype, and the embedding is compared on its own bit for bit).
- Export: runs trained here (eps on the linear schedule; v on the cosine one; class-conditional) written with
  `ddpm_nb export` and loaded by diffusers' `DDPMPipeline` / `UNet2DModel.from_pretrained` draw the images `sample()`
  draws and compute the same outputs; the scheduler settings (cosine, v, sigma^2 = beta) survive the round trip.
- The command line: `ddpm_nb sample --ckpt` on a pipeline folder and on a bare UNet folder.
- Bad input: each problem gets one error that names it.

diffusers is in the dev extra, so these tests run wherever the test suite does.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.models.embeddings import get_timestep_embedding
from safetensors.torch import load_file, save_file
from test_cli import TINY, ddpm_nb, in_parallel

from ddpm_nb.ckpt import load_model
from ddpm_nb.interop import load_diffusers, save_diffusers, unet_config_from_diffusers, unet_config_to_diffusers
from ddpm_nb.sample import sample
from ddpm_nb.unet import UNet, UNetConfig, timestep_embedding

CIFAR10 = {   # the fields of google/ddpm-cifar10-32's unet/config.json that describe the network
    "_class_name": "UNet2DModel", "act_fn": "silu", "attention_head_dim": None, "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False, "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
    "time_embedding_type": "positional", "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}
LAYOUT_256 = {**CIFAR10, "block_out_channels": [128, 128, 256, 256, 512, 512], "sample_size": 256,
              "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
              "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4}


def _jolted(model, scale=0.02, seed=0):
    "Every weight moved off its initialisation (diffusers' and ours start some layers at zero)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters(): p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


class _SameEmbedding(torch.nn.Module):
    "ddpm_nb's time embedding in float64, put in diffusers' place for the float64 comparison."
    def __init__(self, ch): super().__init__(); self.ch = ch
    def forward(self, t): return timestep_embedding(t, self.ch, dtype=torch.float64)


def _compare(ref, ours, x, t):
    "Largest difference relative to the output's scale, in float32 and (same embedding) in float64."
    with torch.no_grad():
        a, b = ref(x, t).sample, ours(x, t)
        e32 = ((a - b).abs().max() / a.abs().max()).item()
        ref.time_proj = _SameEmbedding(ours.config.ch)
        ref64, ours64 = ref.double(), ours.double()
        a, b = ref64(x.double(), t).sample, ours64(x.double(), t)
        e64 = ((a - b).abs().max() / a.abs().max()).item()
    return e32, e64


@pytest.mark.parametrize("name,config,size", [("cifar10", CIFAR10, 32),
                                              ("256 layout at 64x64, 32 channels", {**LAYOUT_256, "block_out_channels": [32, 32, 64, 64, 128, 128]}, 64)])
def test_import_computes_diffusers_function(tmp_path, name, config, size):
    ref = _jolted(UNet2DModel.from_config(config))
    ref.save_pretrained(tmp_path)                                     # a bare UNet2DModel folder, as diffusers writes it
    ours, s, record = load_diffusers(tmp_path, device="cpu")
    assert ours.n_params == sum(p.numel() for p in ref.parameters())
    assert record["sampling"] == {"variance": "beta_tilde", "clip": True} and "DDPMScheduler's defaults" in record["scheduler"]
    x, t = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)), torch.tensor([3, 777])
    e32, e64 = _compare(ref, ours, x, t)
    print(f"{name}: {e32:.1e} (float32), {e64:.1e} (float64)")
    assert e32 < 1e-4 and e64 < 1e-10


def test_time_embedding_and_parameter_counts():
    "diffusers' embedding in DDPM's settings is ours bit for bit (float32); the released layouts have the presets' counts."
    t = torch.arange(1000)
    for ch in (32, 128):
        assert torch.equal(get_timestep_embedding(t, ch, flip_sin_to_cos=False, downscale_freq_shift=1), timestep_embedding(t, ch))
    with torch.device("meta"):
        for config, preset, count in ((CIFAR10, "cifar10", 35_746_307), (LAYOUT_256, "lsun256", 113_673_219)):
            assert sum(p.numel() for p in UNet2DModel.from_config(config).parameters()) == UNet(preset).n_params == count
            assert unet_config_from_diffusers(config) == UNetConfig.preset(preset, dropout=0.)


def test_old_attention_names(tmp_path):
    "Files written before diffusers 0.14 name the attention layers query/key/value/proj_attn: read the same."
    config = {**CIFAR10, "block_out_channels": [32, 64, 64, 64]}
    ref = _jolted(UNet2DModel.from_config(config))
    ref.save_pretrained(tmp_path)
    f = tmp_path / "diffusion_pytorch_model.safetensors"
    renames = {"to_q.": "query.", "to_k.": "key.", "to_v.": "value.", "to_out.0.": "proj_attn."}
    old = {}
    for k, v in load_file(f).items():
        for new, was in renames.items():
            if ".attentions." in k: k = k.replace(new, was)
        old[k] = v
    assert any(".query." in k for k in old)
    save_file(old, f)
    ours = load_diffusers(tmp_path, device="cpu")[0]
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 900])
    with torch.no_grad(): assert torch.allclose(ref(x, t).sample, ours(x, t), atol=1e-5)


def test_defaults_table_is_diffusers():
    "The defaults the reader applies to missing keys are UNet2DModel's and DDPMScheduler's own."
    import inspect

    from ddpm_nb.interop import DIFFUSERS_SCHEDULER_DEFAULTS, DIFFUSERS_UNET_DEFAULTS
    for cls, table in ((UNet2DModel, DIFFUSERS_UNET_DEFAULTS), (DDPMScheduler, DIFFUSERS_SCHEDULER_DEFAULTS)):
        sig = inspect.signature(cls.__init__).parameters
        for k, v in table.items():
            assert k in sig and sig[k].default == v, (cls.__name__, k, v, sig.get(k))
    assert set(DIFFUSERS_UNET_DEFAULTS) == set(inspect.signature(UNet2DModel.__init__).parameters) - {"self"}


@pytest.mark.parametrize("scheduler,settings", [
    (dict(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", variance_type="fixed_small", clip_sample=False),
     {"prediction": "v", "variance": "beta_tilde", "clip": False, "schedule": "cosine"}),
    (dict(beta_schedule="linear", prediction_type="epsilon", variance_type="fixed_large", clip_sample=True),
     {"prediction": "eps", "variance": "beta", "clip": True, "schedule": "linear"}),
    (dict(beta_schedule="linear", prediction_type="sample", num_train_timesteps=200, beta_start=1e-3, beta_end=0.05, clip_sample=True),
     {"prediction": "x0", "variance": "beta_tilde", "clip": True, "schedule": "diffusers linear"})])
def test_pipeline_folder_settings_round_trip(tmp_path, scheduler, settings):
    "A DDPMPipeline saved by diffusers: its schedule (checked against the scheduler's own alphas_cumprod) and its sampling settings."
    unet = _jolted(UNet2DModel.from_config({**CIFAR10, "block_out_channels": [32, 64, 64, 64]}))
    sched = DDPMScheduler(**scheduler)
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(tmp_path)
    model, s, record = load_diffusers(tmp_path, device="cpu")
    assert model.prediction == settings["prediction"] and s.name == settings["schedule"]
    assert record["sampling"] == {"variance": settings["variance"], "clip": settings["clip"]}
    assert ((sched.alphas_cumprod - s.alpha_bar).abs() / s.alpha_bar).max() < 1e-4   # diffusers multiplies in float32
    assert load_diffusers(tmp_path / "unet", device="cpu")[2]["sampling"] == record["sampling"]   # a pipeline's unet/ uses the pipeline's scheduler


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "Three tiny runs: eps on the linear schedule, v on the cosine one, and a class-conditional one; each exported."
    work = tmp_path_factory.mktemp("interop")
    in_parallel([(("train", "--data", "digits", "--out", "runs/eps", "--steps", 30, "--ckpt-every", 30, *TINY), 0),
                 (("train", "--data", "digits", "--out", "runs/v", "--steps", 30, "--ckpt-every", 30, "--prediction", "v", "--schedule", "cosine", *TINY), 0),
                 (("train", "--data", "digits", "--out", "runs/cond", "--conditional", "--steps", 20, "--ckpt-every", 20, *TINY), 0)], cwd=work)
    for out, _ in in_parallel([(("export", "--ckpt", f"runs/{name}", "--out", f"export/{name}"), 0) for name in ("eps", "v", "cond")], cwd=work):
        assert "DDPMPipeline.from_pretrained" in out
    return work


@pytest.mark.parametrize("name", ["eps", "v"])
def test_exported_run_draws_the_same_images_in_diffusers(runs, name):
    "DDPMPipeline (100 leading steps: DDPM respaced) and DDIMPipeline (50 leading steps, eta 0) on the exported folder = sample() on the run."
    model, s, meta = load_model(runs / "runs" / name, device="cpu")
    pipe = DDPMPipeline.from_pretrained(runs / "export" / name, low_cpu_mem_usage=False)
    pipe.set_progress_bar_config(disable=True)
    config = pipe.scheduler.config
    assert config.prediction_type == {"eps": "epsilon", "v": "v_prediction"}[name]
    assert config.beta_schedule == {"eps": "linear", "v": "squaredcos_cap_v2"}[name]
    hwc = lambda x: (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    theirs = pipe(batch_size=8, generator=torch.Generator().manual_seed(0), num_inference_steps=100, output_type="np").images
    ours = hwc(sample(model, (8, 1, 8, 8), s, sampler="ddpm", n_steps=100, spacing="leading", generator=torch.Generator().manual_seed(0), progress=False))
    ddim = DDIMPipeline(unet=pipe.unet, scheduler=DDIMScheduler.from_config(config, timestep_spacing="leading"))
    ddim.set_progress_bar_config(disable=True)
    theirs_ddim = ddim(batch_size=8, generator=torch.Generator().manual_seed(1), eta=0., num_inference_steps=50,
                       use_clipped_model_output=True, output_type="np").images
    ours_ddim = hwc(sample(model, (8, 1, 8, 8), s, sampler="ddim", n_steps=50, spacing="leading", generator=torch.Generator().manual_seed(1), progress=False))
    gaps = np.abs(theirs - ours).max(), np.abs(theirs_ddim - ours_ddim).max()
    print(f"{name}: DDPM {gaps[0]:.1e}, DDIM {gaps[1]:.1e} (pixels in [0, 1])")
    assert max(gaps) < 1e-3


def test_exported_class_conditional_and_unet_only(runs):
    "A class-conditional run: UNet2DModel.from_pretrained computes our outputs with class_labels (the last row is 'no label'); read back, it keeps its classes."
    model, _, _ = load_model(runs / "runs" / "cond", device="cpu")
    ddpm_nb("export", "--ckpt", "runs/cond", "--out", "export/cond-unet", "--unet-only", "--raw", cwd=runs)
    raw, _, _ = load_model(runs / "runs" / "cond", ema=False, device="cpu")
    for folder, net in ((runs / "export" / "cond" / "unet", model), (runs / "export" / "cond-unet", raw)):
        ref = UNet2DModel.from_pretrained(folder, low_cpu_mem_usage=False).eval()
        x, t, y = torch.randn(10, 1, 8, 8), torch.arange(10) * 99, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, -1])
        with torch.no_grad():
            gap = (ref(x, t, class_labels=torch.where(y < 0, 10, y)).sample - net(x, t, y)).abs().max().item()
        assert gap < 1e-5, gap
        back = load_diffusers(folder, device="cpu")[0]
        assert back.config == net.config and back.config.num_classes == 10
        assert all(torch.equal(back.state_dict()[k], v) for k, v in net.state_dict().items())


def test_sample_command_reads_diffusers_folders(runs, tmp_path):
    "ddpm_nb sample --ckpt on a pipeline folder and on a bare UNet folder: the run's samples; a fixed_large scheduler makes DDPM use sigma^2 = beta."
    bare, large = tmp_path / "bare", tmp_path / "large"
    UNet2DModel.from_pretrained(runs / "export" / "eps" / "unet", low_cpu_mem_usage=False).save_pretrained(bare)   # as diffusers writes one
    opts = ("--n", 6, "--no-progress", "--precision", "fp32")
    (_, _), (pipe_out, _), (bare_out, _), _ = in_parallel([
        (("sample", "--ckpt", "runs/eps", "--npz", "run.npz", *opts), 0), (("sample", "--ckpt", "export/eps", "--npz", "pipe.npz", *opts), 0),
        (("sample", "--ckpt", bare, "--npz", "bare.npz", "--out", "bare.png", *opts), 0),
        (("export", "--ckpt", "runs/eps", "--out", large, "--variance", "beta"), 0)], cwd=runs)
    assert "(step 30)" in pipe_out and "(a diffusers folder)" in bare_out and (runs / "bare.png").exists()
    assert np.array_equal(np.load(runs / "run.npz")["x"], np.load(runs / "pipe.npz")["x"])
    assert np.array_equal(np.load(runs / "run.npz")["x"], np.load(runs / "bare.npz")["x"])   # DDPMScheduler's defaults = the run's schedule
    assert json.loads((large / "scheduler" / "scheduler_config.json").read_text())["variance_type"] == "fixed_large"
    out, _ = ddpm_nb("sample", "--ckpt", large, "--sampler", "ddpm", "--steps", 20, "--n", 6, "--npz", "large.npz", "--no-progress", "--precision", "fp32", cwd=runs)
    assert "sigma^2 = beta" in out
    model, s, _ = load_diffusers(large, device="cpu")
    want = sample(model, (6, 1, 8, 8), s, sampler="ddpm", n_steps=20, variance="beta", generator=torch.Generator().manual_seed(0), progress=False)
    assert np.allclose(np.load(runs / "large.npz")["x"], want.clamp(-1, 1).numpy(), atol=1e-5)


def test_bad_input(runs, tmp_path):
    "Not a diffusers folder, an unsupported block, a truncated file, pickles only, eval on a diffusers folder, an MLP run: one clear error each."
    empty = tmp_path / "empty"; empty.mkdir()
    with pytest.raises(ValueError, match="is not a diffusers model folder: it has neither model_index.json"): load_diffusers(empty)
    unet = runs / "export" / "eps" / "unet"
    config = json.loads((unet / "config.json").read_text())
    blocks, shift, cut, pickle = (tmp_path / n for n in ("blocks", "shift", "cut", "pickle"))
    for folder, changes in ((blocks, {"up_block_types": ["AttnUpBlock2D", "SkipUpBlock2D"]}), (shift, {"resnet_time_scale_shift": "scale_shift"}),
                            (cut, {}), (pickle, {})):
        folder.mkdir(); (folder / "config.json").write_text(json.dumps({**config, **changes}))
    (cut / "diffusion_pytorch_model.safetensors").write_bytes((unet / "diffusion_pytorch_model.safetensors").read_bytes()[:-100])
    (pickle / "diffusion_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="resnet_time_scale_shift = 'scale_shift' is not supported"): load_diffusers(shift)
    with pytest.raises(ValueError, match="ddpm_nb reads safetensors only"): load_diffusers(pickle)
    with pytest.raises(ValueError, match="down_padding = 'same' with image_size = 28"):
        unet_config_to_diffusers(UNetConfig.preset("mnist", ch_mult=(1, 2, 2, 2)))
    ddpm_nb("train", "--data", "moons", "--out", "runs/moons", "--steps", 2, *TINY, cwd=runs)
    errors = [err for _, err in in_parallel([(("sample", "--ckpt", empty, "--npz", "x.npz"), 1), (("sample", "--ckpt", blocks, "--npz", "x.npz"), 1),
                                             (("sample", "--ckpt", cut, "--npz", "x.npz"), 1), (("eval", "--ckpt", "export/eps", "--n", 10), 1),
                                             (("export", "--ckpt", "runs/moons", "--out", "moons-diffusers"), 1)], cwd=runs)]
    assert "holds no complete checkpoint" in errors[0], errors[0]
    assert "up_block_types = ['AttnUpBlock2D', 'SkipUpBlock2D'] is not supported" in errors[1], errors[1]
    assert "is not a readable safetensors file" in errors[2] and "truncated or damaged" in errors[2], errors[2]
    assert "it is a diffusers folder" in errors[3], errors[3]
    assert "holds a MLPDenoiser" in errors[4] and not (runs / "moons-diffusers").exists(), errors[4]


def test_reading_needs_no_diffusers(runs):
    "load_diffusers imports neither diffusers nor huggingface_hub: a fresh interpreter reads a folder with safetensors and JSON only."
    code = ("import sys; from ddpm_nb.interop import load_diffusers; load_diffusers(sys.argv[1], device='cpu'); "
            "import ddpm_nb.cli; bad = [m for m in ('diffusers', 'huggingface_hub') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code, str(runs / "export" / "eps")], check=True)


def test_export_replaces_whole_and_atomically(runs, tmp_path):
    "Exporting into an existing folder replaces it whole; a failed export leaves nothing behind."
    out = tmp_path / "x"
    save_diffusers(runs / "runs" / "eps", out)
    (out / "stale.txt").write_text("old")
    save_diffusers(runs / "runs" / "eps", out, unet_only=True)
    assert not (out / "stale.txt").exists() and (out / "config.json").exists() and not (out / "model_index.json").exists()
    with pytest.raises(ValueError, match="variance must be 'beta_tilde' or 'beta'"): save_diffusers(runs / "runs" / "eps", tmp_path / "y", variance="large")
    assert not (tmp_path / "y").exists() and not list(tmp_path.glob(".y.tmp-*"))
