"""The model domain: model versions and their promotion, training jobs and
datasets, content filter rules. The staff dashboard that shows and drives
them is the ``models_admin.dashboard`` package."""
