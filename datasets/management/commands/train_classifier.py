"""Train a micro / non-micro classifier version from the experts' labels, in this process.

    python manage.py train_classifier --base /models/videomae-base [--epochs 10 --lr 5e-5 --seed 0] [--activate]

Splits the labelled clips 80/20 (stratified), fine-tunes the base VideoMAE model, evaluates it on the test split and
registers the version (``datasets.classifier_versions``). Prints the metrics; exit status 1 if training failed.
``--activate`` makes the new version the pipeline's classifier when it is ready.
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from datasets import classifier_versions as cv


class Command(BaseCommand):
    help = "Fine-tune the VideoMAE classifier on the experts' micro labels and register the version."

    def add_arguments(self, parser):
        parser.add_argument("--base", required=True, metavar="DIR", help="the local VideoMAE model to fine-tune")
        parser.add_argument("--epochs", type=int, default=cv.DEFAULT_EPOCHS)
        parser.add_argument("--lr", type=float, default=cv.DEFAULT_LR)
        parser.add_argument("--seed", type=int, default=cv.DEFAULT_SEED)
        parser.add_argument("--activate", action="store_true", help="activate the version once it is ready")

    def handle(self, *args, base, epochs, lr, seed, activate=False, **options):
        try:
            version = cv.classifier_train_start(base_dir=base, lr=lr, epochs=epochs, seed=seed, user=None,
                                                request_id="command:train_classifier")
        except cv.ClassifierTrainingError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Version {version.version}: training on {version.train_count} clips, testing on "
                          f"{version.test_count}; saving to {version.path}")
        version = cv.classifier_train_run(version_id=version.pk)
        if version.status != version.Status.READY:
            raise CommandError(f"Version {version.version} failed: {version.error}")
        m = version.metrics
        matrix = m["confusion_matrix"]["matrix"]
        self.stdout.write(f"accuracy {m['accuracy']:.3f}  precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
                          f"f1 {m['f1']:.3f}")
        self.stdout.write(f"confusion matrix (rows true, columns predicted; non-micro, micro): {matrix}")
        self.stdout.write(f"model version {m['model_version']}")
        if activate:
            cv.classifier_activate(version=version, user=None, request_id="command:train_classifier")
            self.stdout.write(f"Version {version.version} is now the pipeline's classifier.")
