//! The injected pod as a JSON Patch for the admission response.

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

/// The change from `before` to `after` (the injected pod) as a JSON Patch
/// for the pod as the API server sent it. Both sides are read through the
/// same types, so the patch holds only the sidecar; the injected init
/// containers are inserted by index rather than diffed against the pod's
/// own (which would merge fields these types do not know into them).
pub fn patch(before: &Pod, after: &Pod) -> Result<json_patch::Patch, serde_json::Error> {
    let mut b = serde_json::to_value(before)?;
    let mut a = serde_json::to_value(after)?;
    let take = |v: &mut serde_json::Value| -> Option<Vec<serde_json::Value>> {
        v.get_mut("spec")?
            .as_object_mut()?
            .remove("initContainers")?
            .as_array()
            .cloned()
    };
    let own = take(&mut b);
    let all = take(&mut a).unwrap_or_default();
    let own_len = own.as_ref().map_or(0, Vec::len);
    let added = all.len().saturating_sub(own_len);
    if all[added..] != own.clone().unwrap_or_default()[..] {
        // Not a prepend: the whole pod diffed.
        return Ok(json_patch::diff(
            &serde_json::to_value(before)?,
            &serde_json::to_value(after)?,
        ));
    }
    let mut ops: Vec<serde_json::Value> = Vec::new();
    match own {
        None if added > 0 => ops.push(json!({
            "op": "add", "path": "/spec/initContainers", "value": all[..added],
        })),
        None => {}
        Some(_) => {
            for (i, c) in all[..added].iter().enumerate() {
                ops.push(
                    json!({"op": "add", "path": format!("/spec/initContainers/{i}"), "value": c}),
                );
            }
        }
    }
    let mut patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))?;
    patch.0.extend(json_patch::diff(&b, &a).0);
    Ok(patch)
}
