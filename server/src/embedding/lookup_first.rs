//! Keeps a weight-only-quantized embedding table in int8 inside ONNX Runtime.
//!
//! Quantized sentence-transformer exports (all-MiniLM-L6-v2 int8 among them) store each
//! token-embedding table as int8 codes with a per-row scale and dequantize it in the graph:
//! `Gather(Mul(Cast(codes), scale), ids)`. ONNX Runtime's constant folding turns
//! `Mul(Cast(codes), scale)` into a float32 copy of the whole table before the first call:
//! for MiniLM's 30,522 × 384 vocabulary that is 47 MB resident instead of 12 MB. Looking
//! the rows up first, `Mul(Cast(Gather(codes, ids)), Gather(scale, ids))`, computes the same
//! numbers bit for bit (the dequantization is per element) on just the rows a batch uses,
//! and leaves nothing for the folding to expand.
//!
//! The rewrite works on the protobuf wire format: only the nodes it replaces are decoded and
//! re-encoded; every other byte of the model is copied as it was, so fields this module does
//! not know survive. Any shape it does not recognise leaves the model unchanged.

use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};
use std::collections::{HashMap, HashSet};

/// `ModelProto.graph`.
const MODEL_GRAPH: u32 = 7;
/// `GraphProto.node`, `GraphProto.initializer`, `GraphProto.output`.
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_OUTPUT: u32 = 12;
/// `TensorProto.dims`, `TensorProto.name`; `ValueInfoProto.name`.
const TENSOR_DIMS: u32 = 1;
const TENSOR_NAME: u32 = 8;
const VALUE_INFO_NAME: u32 = 1;

/// The part of `NodeProto` the rewrite reads and writes; attributes stay encoded.
#[derive(Clone, PartialEq, Message)]
struct Node {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(bytes = "vec", repeated, tag = "5")]
    attribute: Vec<Vec<u8>>,
    #[prost(string, tag = "7")]
    domain: String,
}

/// `AttributeProto` with an integer value.
#[derive(Clone, PartialEq, Message)]
struct IntAttribute {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, tag = "3")]
    i: i64,
    /// `AttributeType::INT`.
    #[prost(int32, tag = "20")]
    r#type: i32,
}

const ATTRIBUTE_TYPE_INT: i32 = 2;

/// One field of a protobuf message: its number, its whole encoding (key included) and,
/// for length-delimited fields, its payload.
struct Field<'a> {
    number: u32,
    encoded: &'a [u8],
    payload: &'a [u8],
}

/// Splits a message into its fields; `None` on malformed input or groups.
fn fields(message: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut fields = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let start = rest;
        let (number, wire_type) = decode_key(&mut rest).ok()?;
        let payload: &[u8] = match wire_type {
            WireType::Varint => {
                decode_varint(&mut rest).ok()?;
                &[]
            }
            WireType::SixtyFourBit => {
                rest = rest.get(8..)?;
                &[]
            }
            WireType::ThirtyTwoBit => {
                rest = rest.get(4..)?;
                &[]
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
                let payload = rest.get(..len)?;
                rest = &rest[len..];
                payload
            }
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        let encoded = &start[..start.len() - rest.len()];
        fields.push(Field {
            number,
            encoded,
            payload,
        });
    }
    Some(fields)
}

fn push_field(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// An initializer's name and dimensions.
fn initializer(tensor: &[u8]) -> Option<(String, Vec<i64>)> {
    let mut name = None;
    let mut dims = Vec::new();
    for field in fields(tensor)? {
        match field.number {
            TENSOR_NAME => name = Some(String::from_utf8(field.payload.to_vec()).ok()?),
            TENSOR_DIMS => {
                let mut bytes = field.encoded;
                let (_, wire_type) = decode_key(&mut bytes).ok()?;
                if wire_type == WireType::Varint {
                    dims.push(decode_varint(&mut bytes).ok()? as i64);
                } else {
                    // Packed.
                    let mut packed = field.payload;
                    while !packed.is_empty() {
                        dims.push(decode_varint(&mut packed).ok()? as i64);
                    }
                }
            }
            _ => {}
        }
    }
    Some((name?, dims))
}

/// The model with every quantized embedding lookup rewritten, or `None` when there is
/// nothing to rewrite (or the bytes are not a model this understands).
pub fn rewrite(model: &[u8]) -> Option<Vec<u8>> {
    let model_fields = fields(model)?;
    let graph = model_fields.iter().find(|f| f.number == MODEL_GRAPH)?;
    let new_graph = rewrite_graph(graph.payload)?;
    let mut out = Vec::with_capacity(model.len());
    for field in &model_fields {
        if field.number == MODEL_GRAPH {
            push_field(&mut out, MODEL_GRAPH, &new_graph);
        } else {
            out.extend_from_slice(field.encoded);
        }
    }
    Some(out)
}

/// One lookup to rewrite: the nodes it replaces and what it reads.
struct Lookup {
    cast: usize,
    mul: usize,
    gather: usize,
    codes: String,
    scale: String,
    /// The scale has one value per row (gathered with the ids) rather than one in all.
    scale_per_row: bool,
}

fn rewrite_graph(graph: &[u8]) -> Option<Vec<u8>> {
    let graph_fields = fields(graph)?;
    let mut initializers = HashMap::new();
    let mut graph_outputs = HashSet::new();
    let mut nodes: Vec<(usize, Node)> = Vec::new();
    for (index, field) in graph_fields.iter().enumerate() {
        match field.number {
            GRAPH_NODE => nodes.push((index, Node::decode(field.payload).ok()?)),
            GRAPH_INITIALIZER => {
                let (name, dims) = initializer(field.payload)?;
                initializers.insert(name, dims);
            }
            GRAPH_OUTPUT => {
                if let Some(name) = fields(field.payload)?
                    .iter()
                    .find(|f| f.number == VALUE_INFO_NAME)
                {
                    graph_outputs.insert(String::from_utf8(name.payload.to_vec()).ok()?);
                }
            }
            _ => {}
        }
    }
    let lookups = find_lookups(&nodes, &initializers, &graph_outputs);
    if lookups.is_empty() {
        return None;
    }
    let removed: HashSet<usize> = lookups.iter().flat_map(|l| [l.cast, l.mul]).collect();
    let replaced: HashMap<usize, &Lookup> = lookups.iter().map(|l| (l.gather, l)).collect();
    let position: HashMap<usize, usize> = nodes
        .iter()
        .enumerate()
        .map(|(at, (field, _))| (*field, at))
        .collect();
    let mut out = Vec::with_capacity(graph.len());
    for (index, field) in graph_fields.iter().enumerate() {
        let Some(&at) = position.get(&index) else {
            out.extend_from_slice(field.encoded);
            continue;
        };
        if removed.contains(&at) {
            continue;
        }
        match replaced.get(&at) {
            None => out.extend_from_slice(field.encoded),
            Some(lookup) => {
                for node in lookup_first(lookup, &nodes) {
                    push_field(&mut out, GRAPH_NODE, &node.encode_to_vec());
                }
            }
        }
    }
    Some(out)
}

/// Finds `Gather(Mul(Cast(codes), scale), ids)` on axis 0 where the codes and the scale are
/// initializers and nothing else reads the dequantized table.
fn find_lookups(
    nodes: &[(usize, Node)],
    initializers: &HashMap<String, Vec<i64>>,
    graph_outputs: &HashSet<String>,
) -> Vec<Lookup> {
    let mut producer = HashMap::new();
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for (at, (_, node)) in nodes.iter().enumerate() {
        for output in &node.output {
            producer.insert(output.as_str(), at);
        }
        for input in &node.input {
            *readers.entry(input.as_str()).or_default() += 1;
        }
    }
    let only_reader =
        |value: &str| readers.get(value) == Some(&1) && !graph_outputs.contains(value);
    let plain = |node: &Node, op: &str| node.op_type == op && node.domain.is_empty();
    let mut lookups = Vec::new();
    for (gather, (_, node)) in nodes.iter().enumerate() {
        if !plain(node, "Gather") || node.input.len() != 2 || gather_axis(node) != Some(0) {
            continue;
        }
        let Some(&mul) = producer.get(node.input[0].as_str()) else {
            continue;
        };
        let mul_node = &nodes[mul].1;
        if !plain(mul_node, "Mul") || mul_node.input.len() != 2 || !only_reader(&node.input[0]) {
            continue;
        }
        let Some(&cast) = producer.get(mul_node.input[0].as_str()) else {
            continue;
        };
        let cast_node = &nodes[cast].1;
        if !plain(cast_node, "Cast")
            || cast_node.input.len() != 1
            || !only_reader(&mul_node.input[0])
        {
            continue;
        }
        let (codes, scale) = (&cast_node.input[0], &mul_node.input[1]);
        let (Some(code_dims), Some(scale_dims)) =
            (initializers.get(codes), initializers.get(scale))
        else {
            continue;
        };
        let scale_per_row = match scale_dims.as_slice() {
            [] | [1] => false,
            [rows, 1] if code_dims.len() == 2 && code_dims[0] == *rows => true,
            _ => continue,
        };
        lookups.push(Lookup {
            cast,
            mul,
            gather,
            codes: codes.clone(),
            scale: scale.clone(),
            scale_per_row,
        });
    }
    lookups
}

/// A Gather's axis: 0 when absent; `None` when it is not a plain integer.
fn gather_axis(node: &Node) -> Option<i64> {
    for encoded in &node.attribute {
        let attribute = IntAttribute::decode(encoded.as_slice()).ok()?;
        if attribute.name == "axis" {
            return (attribute.r#type == ATTRIBUTE_TYPE_INT).then_some(attribute.i);
        }
    }
    Some(0)
}

/// The replacement nodes, in order: look the codes (and per-row scales) up, then
/// dequantize the rows.
fn lookup_first(lookup: &Lookup, nodes: &[(usize, Node)]) -> Vec<Node> {
    let gather = &nodes[lookup.gather].1;
    let cast = &nodes[lookup.cast].1;
    let ids = gather.input[1].clone();
    let output = gather.output[0].clone();
    let name = |suffix: &str| format!("{output}/memd_lookup_first/{suffix}");
    let axis = IntAttribute {
        name: "axis".into(),
        i: 0,
        r#type: ATTRIBUTE_TYPE_INT,
    }
    .encode_to_vec();
    let node = |op: &str, input: Vec<String>, output: String, attribute: Vec<Vec<u8>>| Node {
        input,
        output: vec![output],
        name: name(&op.to_ascii_lowercase()),
        op_type: op.into(),
        attribute,
        domain: String::new(),
    };
    let mut replacement = vec![
        node(
            "Gather",
            vec![lookup.codes.clone(), ids.clone()],
            name("codes"),
            vec![axis.clone()],
        ),
        node(
            "Cast",
            vec![name("codes")],
            name("values"),
            cast.attribute.clone(),
        ),
    ];
    let scale = if lookup.scale_per_row {
        let mut gather_scale = node(
            "Gather",
            vec![lookup.scale.clone(), ids],
            name("scales"),
            vec![axis],
        );
        gather_scale.name = name("gather_scales");
        replacement.push(gather_scale);
        name("scales")
    } else {
        lookup.scale.clone()
    };
    replacement.push(node(
        "Mul",
        vec![name("values"), scale],
        output.clone(),
        Vec::new(),
    ));
    replacement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, dims: &[i64]) -> Vec<u8> {
        let mut out = Vec::new();
        for &dim in dims {
            encode_key(TENSOR_DIMS, WireType::Varint, &mut out);
            encode_varint(dim as u64, &mut out);
        }
        push_field(&mut out, TENSOR_NAME, name.as_bytes());
        out
    }

    fn node(op: &str, input: &[&str], output: &str) -> Node {
        Node {
            input: input.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name: output.into(),
            op_type: op.into(),
            attribute: Vec::new(),
            domain: String::new(),
        }
    }

    /// A model whose graph is `nodes` over int8 `codes` [10, 4] and `scale` of `scale_dims`,
    /// with an unknown model field and an unknown graph field to carry through.
    fn model(nodes: &[Node], scale_dims: &[i64]) -> Vec<u8> {
        let mut graph = Vec::new();
        for node in nodes {
            push_field(&mut graph, GRAPH_NODE, &node.encode_to_vec());
        }
        push_field(&mut graph, GRAPH_INITIALIZER, &tensor("codes", &[10, 4]));
        push_field(&mut graph, GRAPH_INITIALIZER, &tensor("scale", scale_dims));
        push_field(&mut graph, 99, b"unknown graph field");
        let mut model = Vec::new();
        encode_key(1, WireType::Varint, &mut model);
        encode_varint(8, &mut model);
        push_field(&mut model, MODEL_GRAPH, &graph);
        push_field(&mut model, 98, b"unknown model field");
        model
    }

    fn graph_nodes(model: &[u8]) -> Vec<Node> {
        let graph = fields(model)
            .unwrap()
            .into_iter()
            .find(|f| f.number == MODEL_GRAPH)
            .unwrap();
        fields(graph.payload)
            .unwrap()
            .into_iter()
            .filter(|f| f.number == GRAPH_NODE)
            .map(|f| Node::decode(f.payload).unwrap())
            .collect()
    }

    fn quantized_lookup() -> Vec<Node> {
        vec![
            node("Shape", &["ids"], "before"),
            node("Cast", &["codes"], "table_f"),
            node("Mul", &["table_f", "scale"], "table"),
            node("Gather", &["table", "ids"], "embedding"),
            node("Relu", &["embedding"], "after"),
        ]
    }

    #[test]
    fn per_row_scales_are_looked_up_with_the_codes() {
        let original = model(&quantized_lookup(), &[10, 1]);
        let rewritten = rewrite(&original).expect("the lookup is rewritten");
        let ops: Vec<_> = graph_nodes(&rewritten)
            .iter()
            .map(|n| (n.op_type.clone(), n.input.clone(), n.output[0].clone()))
            .collect();
        let p = "embedding/memd_lookup_first/";
        assert_eq!(ops[0].0, "Shape");
        assert_eq!(
            ops[1],
            (
                "Gather".into(),
                vec!["codes".into(), "ids".into()],
                format!("{p}codes")
            )
        );
        assert_eq!(
            ops[2],
            (
                "Cast".into(),
                vec![format!("{p}codes")],
                format!("{p}values")
            )
        );
        assert_eq!(
            ops[3],
            (
                "Gather".into(),
                vec!["scale".into(), "ids".into()],
                format!("{p}scales")
            )
        );
        assert_eq!(
            ops[4],
            (
                "Mul".into(),
                vec![format!("{p}values"), format!("{p}scales")],
                "embedding".into()
            )
        );
        assert_eq!(ops[5].0, "Relu");
        assert_eq!(ops.len(), 6);
        // Unknown fields of the model and the graph survive.
        let text = String::from_utf8_lossy(&rewritten);
        assert!(text.contains("unknown model field") && text.contains("unknown graph field"));
    }

    #[test]
    fn a_single_scale_is_used_as_it_is() {
        let rewritten = rewrite(&model(&quantized_lookup(), &[])).unwrap();
        let nodes = graph_nodes(&rewritten);
        let mul = nodes.iter().find(|n| n.op_type == "Mul").unwrap();
        assert_eq!(mul.input[1], "scale");
        assert_eq!(nodes.iter().filter(|n| n.op_type == "Gather").count(), 1);
    }

    #[test]
    fn anything_else_is_left_alone() {
        // The dequantized table is read elsewhere too.
        let mut shared = quantized_lookup();
        shared.push(node("Identity", &["table"], "other"));
        assert!(rewrite(&model(&shared, &[10, 1])).is_none());
        // A scale per column would not follow the rows.
        assert!(rewrite(&model(&quantized_lookup(), &[1, 4])).is_none());
        // Another axis.
        let mut axis1 = quantized_lookup();
        axis1[3].attribute.push(
            IntAttribute {
                name: "axis".into(),
                i: 1,
                r#type: ATTRIBUTE_TYPE_INT,
            }
            .encode_to_vec(),
        );
        assert!(rewrite(&model(&axis1, &[10, 1])).is_none());
        // Not a model at all.
        assert!(rewrite(b"\xff\xff\xff").is_none());
        assert!(rewrite(b"").is_none());
    }

    /// The real model (when `./dev.sh fetch-model` installed it): the rewrite applies and
    /// the vectors come out bit for bit the same.
    #[test]
    fn the_real_model_embeds_exactly_as_before() {
        use crate::embedding::{EmbeddingSettings, Model, ModelSource, local_files};
        let Some((dir, runtime)) = local_files() else {
            eprintln!("skipped: no local embedding model (./dev.sh fetch-model)");
            return;
        };
        let original = std::fs::read(dir.join("model.onnx")).unwrap();
        let rewritten = rewrite(&original).expect("the int8 MiniLM has quantized lookups");
        assert!(rewritten.len() < original.len() + 4096);
        let texts = [
            "Caroline went to the LGBTQ support group on 7 May 2023.",
            "hi",
            "",
        ];
        let settings = EmbeddingSettings {
            source: ModelSource::Local {
                dir: dir.clone(),
                pooling: fastembed::Pooling::Mean,
            },
            onnxruntime: Some(runtime),
            max_length: 128,
            query_threads: 0,
            events: false,
            max_lag: None,
            partition_at: 0,
        };
        let mut model = Model::load(&settings, 1).unwrap();
        let compacted = model.embed(&texts).unwrap();
        let mut plain = Model::load_unmodified(&settings).unwrap();
        assert_eq!(compacted, plain.embed(&texts).unwrap());
    }
}
