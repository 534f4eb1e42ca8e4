//! The views. Each reads the sync engine (`offline::engine::engine()`) and
//! renders one part of the page; stable `data-testid` attributes are for the
//! browser tests.

mod account;
mod chart_panel;
mod dataset;
mod editor;
mod export;
mod grid;
mod history;
mod result;
mod session;
mod sessions;
mod status;
mod timetravel;

pub use account::{Account, AccountBadge};
pub use session::SessionView;
pub use sessions::SessionsPage;
pub use status::{ConnectionBadge, Footer, Problems, UpdateBanners};
