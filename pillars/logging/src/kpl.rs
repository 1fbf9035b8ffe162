//! KPL aggregated records, as the Kinesis Producer Library and `aws-kinesis-agg` write them:
//! the magic `F3 89 9A C2`, a protobuf `AggregatedRecord`, and the MD5 of the protobuf bytes.
//! <https://github.com/awslabs/amazon-kinesis-producer/blob/master/aggregation-format.md>

use md5::{Digest, Md5};
use prost::Message;

pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const MD5_LEN: usize = 16;

#[derive(Clone, PartialEq, Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<Record>,
}

#[derive(Clone, PartialEq, Message)]
struct Record {
    #[prost(uint64, required, tag = "1")]
    partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    data: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    tags: Vec<Tag>,
}

#[derive(Clone, PartialEq, Message)]
struct Tag {
    #[prost(string, required, tag = "1")]
    key: String,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// One record inside an aggregate: its partition key and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub partition_key: String,
    pub data: Vec<u8>,
}

/// The user records of `data` when it is a well-formed aggregate; `None` when it is not one
/// (no magic, a bad checksum, protobuf that does not parse, an index out of its table), in
/// which case the record is taken as it is, as the reference deaggregator does.
pub fn deaggregate(data: &[u8]) -> Option<Vec<UserRecord>> {
    let body = data.strip_prefix(&MAGIC)?;
    let (message, checksum) = body.split_at_checked(body.len().checked_sub(MD5_LEN)?)?;
    if Md5::digest(message).as_slice() != checksum {
        return None;
    }
    let aggregate = AggregatedRecord::decode(message).ok()?;
    aggregate
        .records
        .into_iter()
        .map(|record| {
            let index = usize::try_from(record.partition_key_index).ok()?;
            let partition_key = aggregate.partition_key_table.get(index)?.clone();
            Some(UserRecord { partition_key, data: record.data })
        })
        .collect()
}

/// Bytes an aggregate of `records` takes.
pub fn aggregated_len(records: &[UserRecord]) -> usize {
    MAGIC.len() + to_message(records).encoded_len() + MD5_LEN
}

/// The aggregate of `records` (whose partition keys may differ), as the KPL writes it.
pub fn aggregate(records: &[UserRecord]) -> Vec<u8> {
    let message = to_message(records).encode_to_vec();
    let mut out = Vec::with_capacity(MAGIC.len() + message.len() + MD5_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&message);
    out.extend_from_slice(&Md5::digest(&message));
    out
}

fn to_message(records: &[UserRecord]) -> AggregatedRecord {
    let mut keys: Vec<String> = Vec::new();
    let records = records
        .iter()
        .map(|record| {
            let index = keys.iter().position(|k| *k == record.partition_key).unwrap_or_else(|| {
                keys.push(record.partition_key.clone());
                keys.len() - 1
            });
            Record {
                partition_key_index: index as u64,
                explicit_hash_key_index: None,
                data: record.data.clone(),
                tags: Vec::new(),
            }
        })
        .collect();
    AggregatedRecord { partition_key_table: keys, explicit_hash_key_table: Vec::new(), records }
}

/// Overhead per user record inside an aggregate, at most: field tags and lengths.
pub const RECORD_OVERHEAD: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::fixture;

    #[test]
    fn the_reference_aggregate_holds_two_records() {
        let records = deaggregate(&fixture("kpl-aggregate-2-records.bin")).expect("aggregate");
        assert_eq!(
            records,
            [
                UserRecord {
                    partition_key: "svc-a".into(),
                    data: br#"{"level":"INFO","service":"svc-a","message":"hello"}"#.to_vec(),
                },
                UserRecord {
                    partition_key: "svc-b".into(),
                    data: br#"{"level":"ERROR","service":"svc-b","message":"disk full"}"#.to_vec(),
                },
            ]
        );
    }

    #[test]
    fn a_bad_checksum_or_no_magic_is_not_an_aggregate() {
        assert_eq!(deaggregate(&fixture("kpl-aggregate-bad-md5.bin")), None);
        assert_eq!(deaggregate(b"plain text"), None);
        assert_eq!(deaggregate(&MAGIC), None);
        let mut garbage = MAGIC.to_vec();
        garbage.extend_from_slice(&[0xff; 4]);
        garbage.extend_from_slice(&Md5::digest([0xff; 4]));
        assert_eq!(deaggregate(&garbage), None, "the checksum matches, the protobuf is garbage");
    }

    #[test]
    fn what_we_aggregate_reads_back_byte_for_byte() {
        let records = deaggregate(&fixture("kpl-aggregate-2-records.bin")).expect("aggregate");
        let written = aggregate(&records);
        assert_eq!(written, fixture("kpl-aggregate-2-records.bin"), "the reference's exact bytes");
        assert_eq!(aggregated_len(&records), written.len());
    }
}
