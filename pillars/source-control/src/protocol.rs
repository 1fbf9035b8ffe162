//! The bytes of git's smart protocol (version 0/1) that a mirror speaks: pkt-lines, the
//! ref advertisement, receive-pack's update commands and its `report-status`, demultiplexed
//! from `side-band-64k`. <https://git-scm.com/docs/pack-protocol>,
//! <https://git-scm.com/docs/http-protocol>

use git2::Oid;

use crate::refs::RefName;

/// The largest pkt-line payload git accepts.
const MAX_PAYLOAD: usize = 65516;

/// Appends `payload` as one pkt-line.
pub fn pkt_line(out: &mut Vec<u8>, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD, "pkt-line payload too long");
    out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
    out.extend_from_slice(payload);
}

/// Appends a flush-pkt.
pub fn flush(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0000");
}

/// One pkt-line read from a buffer.
#[derive(Debug, PartialEq, Eq)]
enum Pkt<'a> {
    Data(&'a [u8]),
    /// `0000`; protocol v2's `0001`/`0002` are read as this too.
    Flush,
}

/// Reads the pkt-lines of `bytes` in order; an error says where they stopped making sense.
fn pkt_lines(mut bytes: &[u8]) -> impl Iterator<Item = Result<Pkt<'_>, String>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let read = match pkt_length(bytes) {
            Some(0..=2) => {
                bytes = &bytes[4..];
                Ok(Pkt::Flush)
            }
            Some(length) if length >= 4 && length <= bytes.len() => {
                let payload = &bytes[4..length];
                bytes = &bytes[length..];
                Ok(Pkt::Data(payload))
            }
            _ => {
                let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned();
                bytes = &[];
                Err(format!("malformed pkt-line at `{shown}`"))
            }
        };
        Some(read)
    })
}

/// The length a pkt-line's four hex digits give, header included.
fn pkt_length(bytes: &[u8]) -> Option<usize> {
    let header = std::str::from_utf8(bytes.get(..4)?).ok()?;
    usize::from_str_radix(header, 16).ok()
}

fn trim_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// The refs and capabilities a server advertises for one service.
#[derive(Debug, Default, Clone)]
pub struct Advertisement {
    /// Every advertised ref, hidden ones and peeled `^{}` entries included, `HEAD` not.
    pub refs: Vec<(RefName, Oid)>,
    /// The ref `HEAD` names (`symref=HEAD:…`), or else the branch whose tip `HEAD` has.
    pub head: Option<RefName>,
    pub capabilities: Vec<String>,
    /// Where the listing's redirect led: the repository's URL for what follows.
    pub redirected: Option<crate::transport::Endpoint>,
}

impl Advertisement {
    pub fn supports(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// Parses a smart HTTP advertisement of `service` (`git-upload-pack`,
    /// `git-receive-pack`): the `# service=` pkt-line and a flush, then the refs.
    pub fn parse_http(body: &[u8], service: &str) -> Result<Self, String> {
        let mut lines = pkt_lines(body);
        match lines.next() {
            Some(Ok(Pkt::Data(first)))
                if trim_newline(first) == format!("# service={service}").as_bytes() => {}
            _ => return Err(format!("not a smart HTTP answer for {service}")),
        }
        let mut advertisement = Self::default();
        let mut head_oid = None;
        // Only a listing that ends with its flush-pkt is whole: one cut at the end of a ref
        // line parses, but lacks refs, and the mirror would delete them from the target.
        let mut whole = false;
        for pkt in lines {
            let line = match pkt? {
                Pkt::Flush => {
                    whole = true;
                    continue;
                }
                Pkt::Data(line) => {
                    whole = false;
                    trim_newline(line)
                }
            };
            if line.starts_with(b"version ") {
                continue;
            }
            let (reference, capabilities) = match line.iter().position(|b| *b == 0) {
                Some(nul) => (&line[..nul], Some(&line[nul + 1..])),
                None => (line, None),
            };
            if let Some(capabilities) = capabilities {
                advertisement.capabilities = String::from_utf8_lossy(capabilities)
                    .split(' ')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            let (oid, name) = reference
                .split_at_checked(40)
                .and_then(|(hex, rest)| {
                    let oid = Oid::from_str(std::str::from_utf8(hex).ok()?).ok()?;
                    Some((oid, rest.strip_prefix(b" ")?))
                })
                .ok_or_else(|| {
                    format!("malformed ref line `{}`", String::from_utf8_lossy(reference))
                })?;
            match name {
                b"capabilities^{}" => {}
                b"HEAD" => head_oid = Some(oid),
                name => advertisement.refs.push((RefName::new(name), oid)),
            }
        }
        if !whole {
            return Err(format!(
                "the {service} ref listing ended before its flush-pkt: it was cut short, so nothing was changed; run again"
            ));
        }
        advertisement.head = advertisement.symref_head().or_else(|| {
            let oid = head_oid?;
            let branches =
                advertisement.refs.iter().filter(|(n, o)| *o == oid && n.branch().is_some());
            let names: Vec<&RefName> = branches.map(|(n, _)| n).collect();
            // As git guesses without `symref`: the usual names first, then the first branch.
            ["refs/heads/main", "refs/heads/master"]
                .iter()
                .find_map(|usual| names.iter().find(|n| **n == usual))
                .or(names.first())
                .map(|n| (*n).clone())
        });
        Ok(advertisement)
    }

    fn symref_head(&self) -> Option<RefName> {
        self.capabilities.iter().find_map(|c| c.strip_prefix("symref=HEAD:")).map(RefName::from)
    }
}

/// One ref update sent to receive-pack; the zero id stands for "none".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub name: RefName,
    pub old: Oid,
    pub new: Oid,
}

impl Command {
    pub fn is_delete(&self) -> bool {
        self.new.is_zero()
    }
}

/// receive-pack's request: the update commands (capabilities on the first), then a flush.
/// The pack, if any, follows these bytes.
pub fn encode_commands(commands: &[Command], capabilities: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, command) in commands.iter().enumerate() {
        let mut line = format!("{} {} ", command.old, command.new).into_bytes();
        line.extend_from_slice(command.name.as_bytes());
        if n == 0 {
            line.push(0);
            line.extend_from_slice(capabilities.join(" ").as_bytes());
        }
        line.push(b'\n');
        pkt_line(&mut out, &line);
    }
    flush(&mut out);
    out
}

/// upload-pack's request for the objects of `wants` less what `haves` reach, in one round
/// ended by `done` (no flush before it: a stateless server would end the exchange there).
pub fn encode_fetch(wants: &[Oid], haves: &[Oid], capabilities: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, want) in wants.iter().enumerate() {
        let line = match n {
            0 => format!("want {want} {}\n", capabilities.join(" ")),
            _ => format!("want {want}\n"),
        };
        pkt_line(&mut out, line.as_bytes());
    }
    flush(&mut out);
    for have in haves {
        pkt_line(&mut out, format!("have {have}\n").as_bytes());
    }
    pkt_line(&mut out, b"done\n");
    out
}

/// upload-pack's answer, read as it arrives: its acknowledgement, then the pack on
/// `side-band-64k` channel 1 up to a flush. Progress (channel 2) is dropped; channel 3 and
/// `ERR` carry the server's error.
#[derive(Debug, Default)]
pub struct PackDemux {
    /// The start of a pkt-line whose end has not arrived yet.
    pending: Vec<u8>,
    ended: bool,
}

impl PackDemux {
    /// Reads `chunk`, handing the pack's bytes to `pack` in order.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        pack: &mut impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        self.pending.extend_from_slice(chunk);
        let mut read = 0;
        let result = loop {
            let rest = &self.pending[read..];
            if rest.is_empty() {
                break Ok(());
            }
            if self.ended {
                break Err("bytes after the end of the pack".to_owned());
            }
            if rest.len() < 4 {
                break Ok(());
            }
            let length = match pkt_length(rest) {
                Some(0) => {
                    self.ended = true;
                    read += 4;
                    continue;
                }
                Some(length) if length >= 5 => length,
                _ => break Err(format!("malformed pkt-line at `{}`", lossy(&rest[..4]))),
            };
            if rest.len() < length {
                break Ok(());
            }
            let payload = &rest[4..length];
            read += length;
            match payload.split_first() {
                Some((1, bytes)) => {
                    if let Err(error) = pack(bytes) {
                        break Err(error);
                    }
                }
                Some((2, _)) => {}
                Some((3, message)) => break Err(lossy(trim_newline(message))),
                _ if payload.starts_with(b"ACK ") || payload.starts_with(b"NAK") => {}
                _ => match payload.strip_prefix(b"ERR ") {
                    Some(message) => break Err(lossy(trim_newline(message))),
                    None => break Err(format!("unexpected line `{}`", lossy(payload))),
                },
            }
        };
        self.pending.drain(..read);
        result
    }

    /// Whether the flush that ends the answer was read: the pack is whole.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What receive-pack answered about one push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `Err` with the server's words when the pack could not be stored: then no ref moved.
    pub unpack: Result<(), String>,
    /// Each ref's outcome: `None` when updated, else why it was refused.
    pub refs: Vec<(RefName, Option<String>)>,
    /// What the server said on the progress channel (hooks' output among it).
    pub progress: String,
}

impl Default for Report {
    fn default() -> Self {
        Self { unpack: Ok(()), refs: Vec::new(), progress: String::new() }
    }
}

impl Report {
    /// Reads an answer that carries no report (`report-status` was not asked for): only
    /// what the server said, no ref outcome.
    pub fn progress(body: &[u8], sideband: bool) -> Result<Self, String> {
        let mut report = Self::default();
        if sideband {
            for pkt in pkt_lines(body) {
                let Pkt::Data(data) = pkt? else { continue };
                match data.split_first() {
                    Some((2, rest)) => report.progress.push_str(&String::from_utf8_lossy(rest)),
                    Some((3, rest)) => {
                        return Err(String::from_utf8_lossy(trim_newline(rest)).into_owned());
                    }
                    _ => {}
                }
            }
        }
        Ok(report)
    }

    /// What hooks and the server said (`remote:` lines), for a refusal's reason.
    pub fn remote_messages(&self) -> Option<String> {
        let lines: Vec<&str> = self
            .progress
            .split(['\n', '\r'])
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        if lines.is_empty() {
            return None;
        }
        let joined = lines.join("; ");
        let start = joined.char_indices().rev().nth(499).map_or(0, |(at, _)| at);
        Some(joined[start..].to_owned())
    }

    /// Parses receive-pack's answer, demultiplexing `side-band-64k` when it was asked for.
    /// An error is the server's fatal message, or what made the answer unreadable.
    pub fn parse(body: &[u8], sideband: bool) -> Result<Self, String> {
        let mut progress = String::new();
        let status = if sideband {
            let mut status = Vec::new();
            for pkt in pkt_lines(body) {
                let Pkt::Data(data) = pkt? else { continue };
                match data.split_first() {
                    Some((1, rest)) => status.extend_from_slice(rest),
                    Some((2, rest)) => progress.push_str(&String::from_utf8_lossy(rest)),
                    Some((3, rest)) => {
                        return Err(String::from_utf8_lossy(trim_newline(rest)).into_owned());
                    }
                    _ => return Err("malformed side-band packet".to_owned()),
                }
            }
            status
        } else {
            body.to_vec()
        };
        let mut report = Self { progress, ..Self::default() };
        let mut lines = pkt_lines(&status);
        match lines.next() {
            Some(Ok(Pkt::Data(line))) => match trim_newline(line).strip_prefix(b"unpack ") {
                Some(b"ok") => {}
                Some(reason) => report.unpack = Err(String::from_utf8_lossy(reason).into_owned()),
                None => return Err(unexpected(line)),
            },
            Some(Err(error)) => return Err(error),
            _ => return Err("no report-status in the answer".to_owned()),
        }
        for pkt in lines {
            let line = match pkt? {
                Pkt::Flush => break,
                Pkt::Data(line) => trim_newline(line),
            };
            if let Some(name) = line.strip_prefix(b"ok ") {
                report.refs.push((RefName::new(name), None));
            } else if let Some(rest) = line.strip_prefix(b"ng ") {
                let (name, reason) = match rest.iter().position(|b| *b == b' ') {
                    Some(space) => (&rest[..space], &rest[space + 1..]),
                    None => (rest, b"refused".as_slice()),
                };
                let reason = String::from_utf8_lossy(reason).into_owned();
                report.refs.push((RefName::new(name), Some(reason)));
            } else {
                return Err(unexpected(line));
            }
        }
        Ok(report)
    }
}

fn unexpected(line: &[u8]) -> String {
    format!("unexpected report-status line `{}`", String::from_utf8_lossy(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).expect("20 bytes")
    }

    fn pkts(lines: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            if line.is_empty() { flush(&mut out) } else { pkt_line(&mut out, line) }
        }
        out
    }

    #[test]
    fn pkt_lines_are_framed_as_git_documents_them() {
        // gitprotocol-common(5)'s examples: "a\n" is 0006a\n, "foobar\n" 000bfoobar\n.
        let mut out = Vec::new();
        pkt_line(&mut out, b"a\n");
        pkt_line(&mut out, b"foobar\n");
        flush(&mut out);
        assert_eq!(out, b"0006a\n000bfoobar\n0000");
        assert_eq!(pkts(&[b"a\n", b""]), b"0006a\n0000");
    }

    #[test]
    fn a_receive_pack_advertisement_with_capabilities_and_odd_names() {
        let first =
            format!("{} refs/heads/main\0report-status delete-refs side-band-64k\n", oid(1));
        let latin1 =
            [format!("{} ", oid(2)).into_bytes(), b"refs/heads/caf\xe9\n".to_vec()].concat();
        let body = pkts(&[
            b"# service=git-receive-pack\n",
            b"",
            first.as_bytes(),
            &latin1,
            format!("{} refs/tags/v1^{{}}\n", oid(3)).as_bytes(),
            b"",
        ]);
        let parsed = Advertisement::parse_http(&body, "git-receive-pack").expect("parses");
        assert_eq!(
            parsed.refs,
            [
                (RefName::from("refs/heads/main"), oid(1)),
                (RefName::new(b"refs/heads/caf\xe9".to_vec()), oid(2)),
                (RefName::from("refs/tags/v1^{}"), oid(3)),
            ]
        );
        assert!(parsed.supports("side-band-64k") && parsed.supports("delete-refs"));
    }

    #[test]
    fn an_empty_repository_and_the_head_it_names() {
        let empty = format!("{} capabilities^{{}}\0report-status\n", Oid::ZERO_SHA1);
        let body = pkts(&[b"# service=git-receive-pack\n", b"", empty.as_bytes(), b""]);
        let parsed = Advertisement::parse_http(&body, "git-receive-pack").expect("parses");
        assert!(parsed.refs.is_empty() && parsed.head.is_none());
        assert_eq!(parsed.capabilities, ["report-status"]);

        let head = format!("{} HEAD\0multi_ack symref=HEAD:refs/heads/develop\n", oid(1));
        let develop = format!("{} refs/heads/develop\n", oid(1));
        let main = format!("{} refs/heads/main\n", oid(1));
        let lines = [
            b"# service=git-upload-pack\n".as_slice(),
            b"",
            head.as_bytes(),
            develop.as_bytes(),
            main.as_bytes(),
            b"",
        ];
        let parsed = Advertisement::parse_http(&pkts(&lines), "git-upload-pack").expect("parses");
        assert_eq!(parsed.head, Some(RefName::from("refs/heads/develop")));

        // Without `symref`, the branch at HEAD's commit, `main` preferred.
        let head = format!("{} HEAD\0multi_ack\n", oid(1));
        let lines = [
            b"# service=git-upload-pack\n".as_slice(),
            b"",
            head.as_bytes(),
            develop.as_bytes(),
            main.as_bytes(),
            b"",
        ];
        let parsed = Advertisement::parse_http(&pkts(&lines), "git-upload-pack").expect("parses");
        assert_eq!(parsed.head, Some(RefName::from("refs/heads/main")));
    }

    #[test]
    fn a_listing_without_its_final_flush_is_refused() {
        // As git http-backend writes it, cut after the last ref line: every line parses.
        let mut body = b"001e# service=git-upload-pack\n0000".to_vec();
        body.extend_from_slice(
            b"004b0101010101010101010101010101010101010101 refs/heads/main\0side-band-64k\n",
        );
        assert!(
            Advertisement::parse_http(&[body.as_slice(), b"0000"].concat(), "git-upload-pack")
                .is_ok()
        );
        let error = Advertisement::parse_http(&body, "git-upload-pack").unwrap_err();
        assert!(error.contains("ended before its flush-pkt"), "{error}");
        let service_only = b"001e# service=git-upload-pack\n".as_slice();
        assert!(Advertisement::parse_http(service_only, "git-upload-pack").is_err());
    }

    #[test]
    fn a_dumb_server_or_garbage_is_refused() {
        assert!(Advertisement::parse_http(b"<html>login</html>", "git-receive-pack").is_err());
        let body = pkts(&[b"# service=git-receive-pack\n", b"", b"nonsense\n"]);
        let error = Advertisement::parse_http(&body, "git-receive-pack").unwrap_err();
        assert!(error.contains("malformed ref line"), "{error}");
    }

    #[test]
    fn commands_carry_capabilities_on_the_first_line_only() {
        let commands = [
            Command { name: "refs/heads/gone".into(), old: oid(1), new: Oid::ZERO_SHA1 },
            Command {
                name: RefName::new(b"refs/heads/caf\xe9".to_vec()),
                old: Oid::ZERO_SHA1,
                new: oid(2),
            },
        ];
        let encoded = encode_commands(&commands, &["report-status", "side-band-64k"]);
        // Written out by hand: lengths in hex include their own four bytes.
        let expected = [
            b"0082".as_slice(),
            b"0101010101010101010101010101010101010101 0000000000000000000000000000000000000000",
            b" refs/heads/gone\0report-status side-band-64k\n",
            b"0066",
            b"0000000000000000000000000000000000000000 0202020202020202020202020202020202020202",
            b" refs/heads/caf\xe9\n",
            b"0000",
        ]
        .concat();
        assert_eq!(encoded, expected);
        assert!(commands[0].is_delete() && !commands[1].is_delete());
    }

    fn sideband(band: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        pkt_line(&mut out, &[&[band], payload].concat());
        out
    }

    #[test]
    fn a_report_through_side_band_with_a_refused_ref_and_progress() {
        let status = pkts(&[
            b"unpack ok\n",
            b"ok refs/heads/main\n",
            b"ng refs/heads/forbidden hook declined\n",
            b"",
        ]);
        let body = [
            sideband(2, b"remote: checking\n"),
            sideband(1, &status[..10]),
            sideband(1, &status[10..]),
            b"0000".to_vec(),
        ]
        .concat();
        let report = Report::parse(&body, true).expect("parses");
        assert_eq!(report.unpack, Ok(()));
        assert_eq!(
            report.refs,
            [
                (RefName::from("refs/heads/main"), None),
                (RefName::from("refs/heads/forbidden"), Some("hook declined".to_owned())),
            ]
        );
        assert_eq!(report.progress, "remote: checking\n");
    }

    #[test]
    fn a_fetch_asks_in_one_round_with_capabilities_on_the_first_want() {
        let request = encode_fetch(&[oid(1), oid(2)], &[oid(3)], &["side-band-64k", "ofs-delta"]);
        let want = |n: u8| format!("want {}", oid(n));
        assert_eq!(
            request,
            [
                pkts(&[format!("{} side-band-64k ofs-delta\n", want(1)).as_bytes()]),
                pkts(&[format!("{}\n", want(2)).as_bytes()]),
                b"0000".to_vec(),
                pkts(&[format!("have {}\n", oid(3)).as_bytes(), b"done\n"]),
            ]
            .concat()
        );
    }

    #[test]
    fn the_pack_is_taken_from_channel_one_however_the_answer_is_cut() {
        let answer = [
            pkts(&[b"ACK 0303030303030303030303030303030303030303\n"]),
            sideband(2, b"Counting objects: 3\r"),
            sideband(1, b"PACK first part "),
            sideband(1, b"second part"),
            b"0000".to_vec(),
        ]
        .concat();
        for piece in [1, 3, 7, answer.len()] {
            let mut demux = PackDemux::default();
            let mut pack = Vec::new();
            for chunk in answer.chunks(piece) {
                demux
                    .feed(chunk, &mut |bytes| {
                        pack.extend_from_slice(bytes);
                        Ok(())
                    })
                    .expect("a well-formed answer");
            }
            assert!(demux.ended(), "pieces of {piece}");
            assert_eq!(pack, b"PACK first part second part", "pieces of {piece}");
        }
    }

    #[test]
    fn a_cut_answer_is_not_ended_and_the_servers_errors_are_its_words() {
        let mut demux = PackDemux::default();
        let mut ignore = |_: &[u8]| Ok(());
        demux.feed(&[pkts(&[b"NAK\n"]), sideband(1, b"PACK")].concat(), &mut ignore).unwrap();
        assert!(!demux.ended());

        let error = PackDemux::default()
            .feed(&sideband(3, b"upload-pack: not our ref 1234\n"), &mut ignore)
            .unwrap_err();
        assert_eq!(error, "upload-pack: not our ref 1234");
        let error = PackDemux::default().feed(&pkts(&[b"ERR access denied\n"]), &mut ignore);
        assert_eq!(error.unwrap_err(), "access denied");
        let error = PackDemux::default()
            .feed(&sideband(1, b"PACK"), &mut |_| Err("No space left on device".to_owned()));
        assert_eq!(error.unwrap_err(), "No space left on device");
    }

    #[test]
    fn an_unpack_failure_and_a_fatal_error_are_told_apart() {
        let plain =
            pkts(&[b"unpack index-pack abnormal exit\n", b"ng refs/heads/a unpacker error\n", b""]);
        let report = Report::parse(&plain, false).expect("parses");
        assert_eq!(report.unpack, Err("index-pack abnormal exit".to_owned()));
        let fatal = [sideband(3, b"fatal: repository is read-only\n"), b"0000".to_vec()].concat();
        assert_eq!(Report::parse(&fatal, true), Err("fatal: repository is read-only".to_owned()));
        assert!(Report::parse(b"", true).is_err());
    }
}
