"""finetune-operator: a kopf operator that turns FinetuneJob resources into finished finetunes."""

__version__ = "0.1.0"
