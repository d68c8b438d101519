"""Report files: tax reports (Form 8949 CSV, XLSX, PDF) and PnL reports."""
