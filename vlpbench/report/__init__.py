"""Everything that turns result records into something to read: tables, figures, reports.

- :mod:`.table`: the one table model (typed columns, raw values; CSV, Markdown, HTML, terminal renderers);
- :mod:`.compare`: ``vlpbench compare``'s tidy stage table, per-configuration summary and side-by-side view;
- :mod:`.benchtable`: the embedder tables of ``make bench``;
- :mod:`.tables`, :mod:`.figures`, :mod:`.doc`, :mod:`.build`: the report (``vlpbench report``);
- :mod:`.sweep`, :mod:`.diff`: scaling sweeps and run-to-run comparison.
"""
