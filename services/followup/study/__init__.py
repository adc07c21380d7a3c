"""The study's tables: efficacy (ORR, Kaplan-Meier for OS, PFS and DOR) and safety (DLT, CRS, ICANS,
AEs, SAEs, SUSARs). Pure functions over per-subject summaries derived from the journeys."""
