//! Generated kernels of every example and of `specs/` (`LOSSC_BLESS=1 cargo test --test codegen` rewrites them).

#[path = "bce.rs"]
mod bce_file;
pub use bce_file::bce;
#[path = "bce_logits.rs"]
mod bce_logits_file;
pub use bce_logits_file::bce_logits;
#[path = "cce_logits.rs"]
mod cce_logits_file;
pub use cce_logits_file::cce_logits;
#[path = "contrastive.rs"]
mod contrastive_file;
pub use contrastive_file::contrastive;
#[path = "dice.rs"]
mod dice_file;
pub use dice_file::dice;
#[path = "focal_logits.rs"]
mod focal_logits_file;
pub use focal_logits_file::focal_logits;
#[path = "hinge.rs"]
mod hinge_file;
pub use hinge_file::hinge;
#[path = "house_prices.rs"]
mod house_prices_file;
pub use house_prices_file::house_prices;
#[path = "huber.rs"]
mod huber_file;
pub use huber_file::huber;
#[path = "infonce.rs"]
mod infonce_file;
pub use infonce_file::infonce;
#[path = "log_cosh.rs"]
mod log_cosh_file;
pub use log_cosh_file::log_cosh;
#[path = "mae.rs"]
mod mae_file;
pub use mae_file::mae;
#[path = "moderation.rs"]
mod moderation_file;
pub use moderation_file::moderation;
#[path = "mse.rs"]
mod mse_file;
pub use mse_file::mse;
#[path = "multilabel.rs"]
mod multilabel_file;
pub use multilabel_file::multilabel;
#[path = "ordinal_power.rs"]
mod ordinal_power_file;
pub use ordinal_power_file::ordinal_power;
#[path = "pairwise_hinge_ranking.rs"]
mod pairwise_hinge_ranking_file;
pub use pairwise_hinge_ranking_file::pairwise_hinge_ranking;
#[path = "quantile.rs"]
mod quantile_file;
pub use quantile_file::quantile;
#[path = "triplet.rs"]
mod triplet_file;
pub use triplet_file::triplet;
#[path = "weighted_bce_entropy.rs"]
mod weighted_bce_entropy_file;
pub use weighted_bce_entropy_file::weighted_bce_entropy;
#[path = "xray_triage.rs"]
mod xray_triage_file;
pub use xray_triage_file::xray_triage;
#[path = "batch_softmax_scalar.rs"]
mod batch_softmax_scalar_file;
pub use batch_softmax_scalar_file::batch_softmax_scalar;
#[path = "peel.rs"]
mod peel_file;
pub use peel_file::peel;
#[path = "reductions.rs"]
mod reductions_file;
pub use reductions_file::reductions;
#[path = "scalar_pred_of_a_row.rs"]
mod scalar_pred_of_a_row_file;
pub use scalar_pred_of_a_row_file::scalar_pred_of_a_row;
#[path = "two_softmaxes.rs"]
mod two_softmaxes_file;
pub use two_softmaxes_file::two_softmaxes;

/// The kernel of the example named `name`.
pub fn by_name<T: lossc::Float>(name: &str) -> Option<lossc::Kernel<T>> {
    match name {
        "bce" => Some(bce::kernel()),
        "bce_logits" => Some(bce_logits::kernel()),
        "cce_logits" => Some(cce_logits::kernel()),
        "contrastive" => Some(contrastive::kernel()),
        "dice" => Some(dice::kernel()),
        "focal_logits" => Some(focal_logits::kernel()),
        "hinge" => Some(hinge::kernel()),
        "house_prices" => Some(house_prices::kernel()),
        "huber" => Some(huber::kernel()),
        "infonce" => Some(infonce::kernel()),
        "log_cosh" => Some(log_cosh::kernel()),
        "mae" => Some(mae::kernel()),
        "moderation" => Some(moderation::kernel()),
        "mse" => Some(mse::kernel()),
        "multilabel" => Some(multilabel::kernel()),
        "ordinal_power" => Some(ordinal_power::kernel()),
        "pairwise_hinge_ranking" => Some(pairwise_hinge_ranking::kernel()),
        "quantile" => Some(quantile::kernel()),
        "triplet" => Some(triplet::kernel()),
        "weighted_bce_entropy" => Some(weighted_bce_entropy::kernel()),
        "xray_triage" => Some(xray_triage::kernel()),
        "batch_softmax_scalar" => Some(batch_softmax_scalar::kernel()),
        "peel" => Some(peel::kernel()),
        "reductions" => Some(reductions::kernel()),
        "scalar_pred_of_a_row" => Some(scalar_pred_of_a_row::kernel()),
        "two_softmaxes" => Some(two_softmaxes::kernel()),
        _ => None,
    }
}
