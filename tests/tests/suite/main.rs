//! The one integration-test binary. Each module tests one area against
//! real parts: server processes, SQLite files, DuckDB, headless Chromium.

mod skeleton;
