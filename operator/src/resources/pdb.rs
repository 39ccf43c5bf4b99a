//! The PodDisruptionBudget: at most one node pod may be evicted at a time, so a drain never takes
//! two copies of a partition down together.

use super::{Names, Owner, selector_labels};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The set's PodDisruptionBudget.
pub fn pod_disruption_budget(owner: &Owner, names: &Names) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owner.meta(&names.pod_disruption_budget),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&owner.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
