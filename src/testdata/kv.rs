//! Typed OTLP attributes in one call each.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};

pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.to_string()))
}

pub fn kv_i64(key: &str, value: i64) -> KeyValue {
    kv(key, Value::IntValue(value))
}

pub fn kv_f64(key: &str, value: f64) -> KeyValue {
    kv(key, Value::DoubleValue(value))
}

pub fn kv_bool(key: &str, value: bool) -> KeyValue {
    kv(key, Value::BoolValue(value))
}

pub fn kv_str_array(key: &str, values: &[&str]) -> KeyValue {
    kv(
        key,
        Value::ArrayValue(ArrayValue {
            values: values
                .iter()
                .map(|v| AnyValue {
                    value: Some(Value::StringValue((*v).to_string())),
                })
                .collect(),
        }),
    )
}

/// `key` whose value is a list holding a list … `depth` levels deep, a
/// string at the bottom (hostile nesting).
pub fn kv_nested(key: &str, depth: usize) -> KeyValue {
    let mut value = Value::StringValue("bottom".to_string());
    for _ in 0..depth {
        value = Value::KvlistValue(KeyValueList {
            values: vec![kv("k", value)],
        });
    }
    kv(key, value)
}
