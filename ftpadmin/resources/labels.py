"""Column labels for exports people read: the model fields' verbose names."""

from django.core.exceptions import FieldDoesNotExist
from django.utils.text import capfirst


class VerboseLabelsMixin:
    """Label each export column with its model field's verbose name.

    ``export`` attaches the labels to the dataset (``dataset.labels``), for
    the formats that people open (CSV (Excel), XLSX); the formats for
    scripts keep the columns' names. ``labels`` overrides a column's label,
    e.g. for a foreign key's raw id.
    """

    labels = {}

    @classmethod
    def field_label(cls, name):
        """Return the label of the field ``name`` (a field name of the resource)."""
        if name in cls.labels:
            return str(cls.labels[name])
        field = cls.fields.get(name)
        attribute = getattr(field, "attribute", None) or name
        try:
            model_field = cls._meta.model._meta.get_field(attribute)
        except FieldDoesNotExist:
            return name.replace("_", " ").capitalize()
        return capfirst(str(model_field.verbose_name))

    def export(self, *args, **kwargs):
        dataset = super().export(*args, **kwargs)
        by_column = {field.column_name: name for name, field in self.fields.items()}
        dataset.labels = [
            self.field_label(by_column.get(header, header))
            for header in dataset.headers or ()
        ]
        return dataset
