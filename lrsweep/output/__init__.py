"""What lrsweep writes for people: the report/ folder (files), its report.md (report_md), the
figure list of a report (figures) and the one table formatter (markdown). analysis/ computes
the numbers; this package only lays them out; plots/ only draws."""
