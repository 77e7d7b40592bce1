"""The staff dashboard under ``/dashboard/``: pages, forms, the page
read-models and the staff socket. It reads and acts through the ``chat``
app and the model domain (the rest of ``models_admin``); nothing below it
imports it."""
