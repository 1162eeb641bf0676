"""The launch form: the paper's defaults shown and editable. Types are checked here; whether the job can run (frames
4k+1, sizes, paths, GPUs, learning rate) is decided by services.job_validate, which gives the reasons."""
from __future__ import annotations

from django import forms
from django.conf import settings

from training_jobs import services
from training_jobs.models import BaseModelWeights

D = services.FINETUNE_DEFAULTS


def _training():
    return settings.TRAINING


class LaunchForm(forms.Form):
    name = forms.CharField(max_length=120, required=False, help_text="Optional; a name is made up otherwise.")
    base_model = forms.ModelChoiceField(queryset=BaseModelWeights.objects.order_by("name"),
                                        empty_label="(choose registered weights)")
    mode = forms.ChoiceField(choices=[("full", "Full fine-tuning"), ("lora", "LoRA")], initial="full")
    lora_rank = forms.IntegerField(initial=D["lora_rank"], label="LoRA rank")
    lora_target_modules = forms.CharField(initial=", ".join(D["lora_target_modules"]), label="LoRA target modules",
                                          required=False)
    snapshot_name = forms.CharField(max_length=120, required=False, label="Snapshot name")
    manifest_path = forms.CharField(max_length=500, required=False, label="or manifest path")
    batch_size = forms.IntegerField(initial=D["batch_size"])
    max_steps = forms.IntegerField(initial=D["max_steps"], label="Steps")
    learning_rate = forms.FloatField(initial=services.LR_DEFAULTS["full"], label="Learning rate", required=False,
                                     help_text="Paper: 1e-5 for full fine-tuning, 1e-4 for LoRA (blank: that).")
    mixed_precision = forms.ChoiceField(choices=[("bf16", "bf16"), ("fp16", "fp16"), ("no", "fp32")],
                                        initial=D["mixed_precision"])
    cfg_drop_rate = forms.FloatField(initial=D["cfg_drop_rate"], label="CFG drop rate")
    height = forms.IntegerField(initial=D["height"])
    width = forms.IntegerField(initial=D["width"])
    num_frames = forms.IntegerField(initial=D["num_frames"], label="Frames")
    weight_decay = forms.FloatField(initial=D["weight_decay"])
    gradient_checkpointing = forms.BooleanField(initial=D["gradient_checkpointing"], required=False)
    save_every = forms.IntegerField(initial=D["save_every"], label="Save a checkpoint every N steps")
    gpus = forms.IntegerField(initial=1, label="GPUs")
    cpus_per_task = forms.IntegerField(label="CPUs per task")
    mem = forms.CharField(max_length=20, label="Memory")
    time_limit = forms.CharField(max_length=20, label="Time limit")
    partition = forms.CharField(max_length=60)
    backend = forms.ChoiceField(choices=[("slurm", "Slurm (sbatch)"), ("local", "Local subprocess")])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        training = _training()
        self.fields["cpus_per_task"].initial = training["DEFAULT_CPUS_PER_TASK"]
        self.fields["mem"].initial = training["DEFAULT_MEM"]
        self.fields["time_limit"].initial = training["DEFAULT_TIME_LIMIT"]
        self.fields["partition"].initial = training["DEFAULT_PARTITION"]
        self.fields["backend"].initial = training["DEFAULT_BACKEND"]
        self.fields["gpus"].help_text = f"Type {training['GPU_TYPE']}."

    def job_kwargs(self) -> dict:
        """Keyword arguments of services.job_create from the cleaned data."""
        data = self.cleaned_data
        modules = [m.strip() for m in (data.get("lora_target_modules") or "").split(",") if m.strip()]
        params = {
            "mode": data["mode"], "lora_rank": data["lora_rank"], "lora_target_modules": modules,
            "batch_size": data["batch_size"], "max_steps": data["max_steps"], "learning_rate": data["learning_rate"],
            "mixed_precision": data["mixed_precision"], "cfg_drop_rate": data["cfg_drop_rate"],
            "height": data["height"], "width": data["width"], "num_frames": data["num_frames"],
            "weight_decay": data["weight_decay"], "gradient_checkpointing": data["gradient_checkpointing"],
            "save_every": data["save_every"],
        }
        if params["learning_rate"] is None:
            del params["learning_rate"]  # the mode's paper default
        resources = {"gpus": data["gpus"], "gpu_type": _training()["GPU_TYPE"],
                     "cpus_per_task": data["cpus_per_task"], "mem": data["mem"].strip(),
                     "time_limit": data["time_limit"].strip(), "partition": data["partition"].strip()}
        return {"kind": "finetune", "base_model": data["base_model"], "name": data.get("name") or "",
                "snapshot_name": data.get("snapshot_name", "").strip(),
                "manifest_path": data.get("manifest_path", "").strip(),
                "config": {"params": params, "resources": resources}, "backend": data["backend"]}


class WeightsForm(forms.Form):
    name = forms.CharField(max_length=120, help_text='e.g. "Wan2.1-T2V-1.3B"')
    path = forms.CharField(max_length=500, help_text="The weights directory on the cluster's shared filesystem.")
