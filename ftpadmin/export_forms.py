"""The admin's export form, with the columns labelled as the exports label them."""

from import_export.forms import SelectableFieldsExportForm


class LabelledFieldsExportForm(SelectableFieldsExportForm):
    """Label each column's checkbox with the resource's label for it.

    import-export titles the field's name ("Remote Ip", "Tls"); a resource
    with ``field_label`` (``ftpadmin.resources.labels``) gives the model
    field's verbose name ("Client IP", "TLS") instead.
    """

    def _get_field_label(self, resource, field_name):
        label = getattr(resource, "field_label", None)
        if label is None:
            return super()._get_field_label(resource, field_name)
        return label(field_name)
