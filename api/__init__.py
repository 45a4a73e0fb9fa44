"""HTTP: lead intake for CRMs and sites, lead histories and stats for supervisors."""
