"""Training and evaluation on torch and transformers, with no Django: the
Celery tasks in ``models_admin.tasks`` feed them rows and store what they
report."""
