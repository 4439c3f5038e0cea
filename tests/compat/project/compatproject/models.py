"""A model for djangochannelsrestframework's generic consumer and model observer to work on."""

from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=200)
