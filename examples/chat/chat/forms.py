"""The lobby's form for opening a new room."""

from __future__ import annotations

from django import forms

from chat.models import Room

__all__ = ["RoomForm"]


class RoomForm(forms.ModelForm):
    class Meta:
        model = Room
        fields = ["name", "topic"]
        widgets = {
            "name": forms.TextInput(attrs={"placeholder": "room-name", "autocomplete": "off"}),
            "topic": forms.TextInput(attrs={"placeholder": "What is it about? (optional)", "autocomplete": "off"}),
        }
