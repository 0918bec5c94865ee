"""The RJMetrics / Magento BI Data Import API: its routes, its validation, its fast path."""
