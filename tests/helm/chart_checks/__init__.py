"""The checks tests/helm/check_chart.py runs against helm/ponder, one concept a module.

check_chart.py is the entry point (and lists what is checked); these modules hold the
pieces: the scenarios, lint, render, kubernetes-validate, and one module per group of
assertions on the rendered objects.
"""



