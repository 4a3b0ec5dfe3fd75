"""Reads a Prometheus text exposition on stdin with the Prometheus project's
own parser (prometheus_client) and prints one line per sample:
`NAME{label="value",...} VALUE`, labels sorted. Exits non-zero if the text
does not parse."""
import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    print(f"# family {family.name} {family.type}")
    for sample in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
        print(f"{sample.name}{{{labels}}} {sample.value}")
