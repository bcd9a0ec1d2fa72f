//! Attribute access for one node, with defaults and clear errors.

use crate::proto::{attribute_proto::AttributeType, AttributeProto, NodeProto};
use crate::tensor::{tensor_from_proto, TensorLimits};
use kestrel_core::graph::AttrValue;
use kestrel_core::{Error, Result, Tensor};
use std::collections::BTreeMap;

/// Converts every attribute of a node (unknown kinds are kept as [`AttrValue::Other`]).
pub fn convert_attrs(
    node: &NodeProto,
    limits: &TensorLimits,
) -> Result<BTreeMap<String, AttrValue>> {
    let mut out = BTreeMap::new();
    for a in &node.attribute {
        out.insert(a.name().to_string(), convert_attr(a, limits)?);
    }
    Ok(out)
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn convert_attr(a: &AttributeProto, limits: &TensorLimits) -> Result<AttrValue> {
    let ty = a.r#type.and_then(|t| AttributeType::try_from(t).ok());
    Ok(match ty {
        Some(AttributeType::Int) => AttrValue::Int(a.i()),
        Some(AttributeType::Float) => AttrValue::Float(a.f()),
        Some(AttributeType::String) => AttrValue::String(string(a.s())),
        Some(AttributeType::Tensor) => match &a.t {
            Some(t) => AttrValue::Tensor(tensor_from_proto(t, None, limits)?),
            None => AttrValue::Other("empty tensor".into()),
        },
        Some(AttributeType::Ints) => AttrValue::Ints(a.ints.clone()),
        Some(AttributeType::Floats) => AttrValue::Floats(a.floats.clone()),
        Some(AttributeType::Strings) => {
            AttrValue::Strings(a.strings.iter().map(|s| string(s)).collect())
        }
        Some(other) => AttrValue::Other(format!("{other:?}")),
        // Files written without `type`: infer from which field is set.
        None => {
            if a.i.is_some() {
                AttrValue::Int(a.i())
            } else if a.f.is_some() {
                AttrValue::Float(a.f())
            } else if a.s.is_some() {
                AttrValue::String(string(a.s()))
            } else if let Some(t) = &a.t {
                AttrValue::Tensor(tensor_from_proto(t, None, limits)?)
            } else if !a.ints.is_empty() {
                AttrValue::Ints(a.ints.clone())
            } else if !a.floats.is_empty() {
                AttrValue::Floats(a.floats.clone())
            } else {
                AttrValue::Other("untyped".into())
            }
        }
    })
}

/// Typed attribute lookup for one node; errors name the node, op and opset.
pub struct NodeAttrs<'a> {
    pub name: &'a str,
    pub op_type: &'a str,
    pub opset: i64,
    pub attrs: &'a BTreeMap<String, AttrValue>,
}

impl NodeAttrs<'_> {
    /// An [`Error::Unsupported`] for this node.
    pub fn unsupported(&self, msg: impl Into<String>) -> Error {
        Error::Unsupported {
            node: self.name.to_string(),
            op_type: self.op_type.to_string(),
            opset: self.opset,
            msg: msg.into(),
        }
    }

    /// An [`Error::InvalidModel`] naming this node.
    pub fn invalid(&self, msg: impl std::fmt::Display) -> Error {
        Error::InvalidModel(format!(
            "node '{}' ({}, opset {}): {msg}",
            self.name, self.op_type, self.opset
        ))
    }

    pub fn has(&self, name: &str) -> bool {
        self.attrs.contains_key(name)
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        match self.attrs.get(name) {
            None => Ok(default),
            Some(AttrValue::Int(i)) => Ok(*i),
            Some(other) => {
                Err(self.invalid(format!("attribute {name} should be an int, got {other:?}")))
            }
        }
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool> {
        Ok(self.int(name, default as i64)? != 0)
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        match self.attrs.get(name) {
            None => Ok(default),
            Some(AttrValue::Float(f)) => Ok(*f),
            Some(AttrValue::Int(i)) => Ok(*i as f32),
            Some(other) => {
                Err(self.invalid(format!("attribute {name} should be a float, got {other:?}")))
            }
        }
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String> {
        match self.attrs.get(name) {
            None => Ok(default.to_string()),
            Some(AttrValue::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.invalid(format!(
                "attribute {name} should be a string, got {other:?}"
            ))),
        }
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(AttrValue::Ints(v)) => Ok(Some(v.clone())),
            Some(AttrValue::Int(i)) => Ok(Some(vec![*i])),
            Some(other) => {
                Err(self.invalid(format!("attribute {name} should be ints, got {other:?}")))
            }
        }
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(AttrValue::Floats(v)) => Ok(Some(v.clone())),
            Some(other) => {
                Err(self.invalid(format!("attribute {name} should be floats, got {other:?}")))
            }
        }
    }

    /// Non-negative integer list (kernel shapes, strides, pads).
    pub fn usizes(&self, name: &str) -> Result<Option<Vec<usize>>> {
        match self.ints(name)? {
            None => Ok(None),
            Some(v) => v
                .iter()
                .map(|&x| {
                    usize::try_from(x).map_err(|_| {
                        self.unsupported(format!("attribute {name} has negative value {x}"))
                    })
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }

    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(AttrValue::Tensor(t)) => Ok(Some(t.clone())),
            Some(other) => Err(self.invalid(format!(
                "attribute {name} should be a tensor, got {other:?}"
            ))),
        }
    }
}
