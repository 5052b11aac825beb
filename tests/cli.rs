//! CLI golden tests: run the binary on files and check stdout, exit status and error lines.
