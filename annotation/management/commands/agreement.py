"""``manage.py agreement --workflow NAME [--json] [--bootstrap N] [--seed S]``: inter-rater agreement of a workflow.

``--json`` prints exactly what ``GET /api/agreement/NAME/`` answers (same keys, same numbers for the same bootstrap
count and seed, whose defaults are shared)."""
import json

from django.core.management.base import BaseCommand, CommandError

from annotation import agreement_data
from annotation.models import Workflow


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(low, high) -> str:
    return "" if low is None else f" [{_number(low)}, {_number(high)}]"


class Command(BaseCommand):
    help = ("Inter-rater agreement of one workflow's decisions: Cohen's kappa per pair, Fleiss' kappa, "
            "Krippendorff's alpha, percent agreement, with 95% bootstrap CIs.")

    def add_arguments(self, parser):
        parser.add_argument("--workflow", required=True, choices=Workflow.values)
        parser.add_argument("--json", action="store_true", help="print the report as JSON (the API's answer)")
        parser.add_argument("--bootstrap", type=int, default=agreement_data.DEFAULT_BOOTSTRAP,
                            help=f"bootstrap resamples for the 95%% CIs (default {agreement_data.DEFAULT_BOOTSTRAP})")
        parser.add_argument("--seed", type=int, default=agreement_data.DEFAULT_SEED,
                            help=f"bootstrap seed (default {agreement_data.DEFAULT_SEED})")

    def handle(self, *args, workflow, json: bool = False, bootstrap: int, seed: int, **options):
        try:
            report = agreement_data.workflow_agreement(workflow, bootstrap=bootstrap, seed=seed)
        except ValueError as error:
            raise CommandError(str(error)) from None
        if json:
            self.stdout.write(_dumps(report))
            return
        self.stdout.write(self._text(report))

    def _text(self, report: dict) -> str:
        lines = [
            f"Workflow {report['workflow']}: {report['n_ratings']} decisions on {report['n_items']} items by "
            f"{len(report['raters'])} experts; labels: {', '.join(report['categories']) or 'none'}.",
            "",
            f"{'expert A':<20} {'expert B':<20} {'n':>5} {'kappa':>7}  {'95% CI':<18} {'agree %':>8}",
        ]
        for pair in report["pairwise"]:
            ci = _ci(pair["ci_low"], pair["ci_high"]).strip()
            lines.append(f"{pair['rater_a']!s:<20} {pair['rater_b']!s:<20} {pair['n_items']:>5} "
                         f"{_number(pair['kappa']):>7}  {ci:<18} {_number(pair['percent_agreement'], 1):>8}")
        fleiss, alpha, pct = report["fleiss"], report["krippendorff"], report["percent_agreement"]
        lines += [
            "",
            f"Fleiss' kappa (complete panels of {fleiss['n_raters_per_item']}, n={fleiss['n_items']}): "
            f"{_number(fleiss['kappa'])}{_ci(fleiss['ci_low'], fleiss['ci_high'])}",
            f"Krippendorff's alpha (nominal, n={alpha['n_items']} items, {alpha['n_raters']} raters): "
            f"{_number(alpha['alpha'])}{_ci(alpha['ci_low'], alpha['ci_high'])}",
            f"Percent agreement (n={pct['n_items']}): {_number(pct['value'], 1)}",
            f"Bootstrap: {report['bootstrap']['resamples']} resamples, seed {report['bootstrap']['seed']}.",
        ]
        return "\n".join(lines)


def _dumps(report: dict) -> str:
    return json.dumps(report, indent=2)
