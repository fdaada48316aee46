"""What duet reports: Rich tables and their numbers, JSON documents, provenance and atomic writes."""
