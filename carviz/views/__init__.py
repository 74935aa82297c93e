"""Pure builders for the pages: Plotly figures, tables and page-shaped summaries."""
