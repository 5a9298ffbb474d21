//! Writes under failure: min_size, OSDs dying in a stream of writes (by signal and at crash
//! points), concurrent writers to one object, striped objects, a full OSD.

use super::*;

#[test]
fn writes_stop_below_min_size_with_a_clear_error_and_resume_when_a_copy_returns() {
    let (c, mut osds, work) = replicated_cluster(4);
    put(&c, &work, "before", &pattern(1, 10_000));
    wait_clean(&c, 4);

    // Two of three copies gone: min_size is 2, so no PG may take writes.
    osds.kill(1);
    osds.kill(2);
    c.ok(&["osd", "down", "1", "2"]);
    let status = c.wait_status("PGs inactive", Duration::from_secs(30), |s| {
        check_codes(s).contains(&"PG_INACTIVE".to_owned())
    });
    assert_eq!(status["osds"]["up"], 1, "{status}");
    let file = work.join("during.in");
    std::fs::write(&file, pattern(2, 10_000)).unwrap();
    let refused = c.fails(&["obj", "put", "rbd", "during", path_str(&file), "--timeout", "3"]);
    assert!(refused.contains("min_size 2"), "{refused}");
    // The OSD keeps answering: the refusal is an answer, not a hang.
    assert!(refused.contains("osd.0"), "{refused}");

    // One copy back: writes resume, and nothing written before is lost.
    osds.start(1);
    wait_up(&c, 2);
    c.wait_status("PGs active again", Duration::from_secs(60), |s| {
        !check_codes(s).contains(&"PG_INACTIVE".to_owned()) && all_active(s)
    });
    put(&c, &work, "during", &pattern(2, 10_000));
    assert!(get(&c, &work, "during") == pattern(2, 10_000));
    assert!(get(&c, &work, "before") == pattern(1, 10_000));
}

/// Objects by name with their contents.
type Named = Vec<(String, Vec<u8>)>;

/// Puts objects one after another until told to stop; the ones acknowledged, in order.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<Named>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(c: &Cluster, work: &std::path::Path) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (conf, work) = (c.config(), work.to_owned());
        let thread = {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Whole chunks (block file) and a partial one (RocksDB) in each.
                    let (name, data) =
                        (format!("s{i}"), pattern(100 + i, 150_000 + 977 * i as usize));
                    let file = work.join(format!("{name}.in"));
                    std::fs::write(&file, &data).unwrap();
                    let status = Command::new(BIN)
                        .arg("--conf")
                        .arg(&conf)
                        .args(["obj", "put", "rbd", &name, path_str(&file), "--timeout", "60"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .unwrap();
                    if status.success() {
                        acked.lock().unwrap().push((name, data));
                    }
                    i += 1;
                }
            })
        };
        Writer { stop, acked, thread: Some(thread) }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits (at most 60 s) until `n` puts were acknowledged in all.
    fn wait_acked(&self, n: usize) {
        common::wait_for(&format!("{n} puts acknowledged"), Duration::from_secs(60), || {
            let acked = self.acked();
            if acked >= n { Ok(()) } else { Err(format!("{acked} acknowledged")) }
        })
    }

    fn finish(mut self) -> Named {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

#[test]
fn an_osd_killed_during_a_stream_of_writes_loses_no_acknowledged_write() {
    writes_survive_an_osd_that_dies(None);
}

#[test]
fn a_primary_that_dies_after_applying_a_write_before_replicating_it_loses_no_acknowledged_write() {
    writes_survive_an_osd_that_dies(Some("osd::write_applied"));
}

#[test]
fn a_primary_that_dies_after_replicating_a_write_before_answering_loses_no_acknowledged_write() {
    writes_survive_an_osd_that_dies(Some("osd::write_replicated"));
}

/// A stream of writes goes on while osd.2 dies: at a crash point (`osd/src/failpoints.rs`)
/// after some writes it is primary of, so the window is hit for sure, or by SIGKILL at a
/// moment when some writes are in flight. It returns; no acknowledged write is lost.
fn writes_survive_an_osd_that_dies(crash_point: Option<&str>) {
    let c = Cluster::start(3);
    let mut osds = Osds::create_with_env(&c, 4, |i| match crash_point {
        Some(point) if i == 2 => vec![("FAILPOINTS".to_owned(), format!("{point}=8*off->return"))],
        _ => Vec::new(),
    });
    wait_up(&c, 4);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "16"]);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let writer = Writer::start(&c, &work);
    match crash_point {
        Some(point) => {
            let exit = osds.wait_exit(2, Duration::from_secs(60));
            assert_eq!(exit.code(), Some(osd::failpoints::CRASH_EXIT_CODE), "osd.2: {exit}");
            wait_log(&osds.dirs[2], "crash point reached", point);
        }
        None => {
            writer.wait_acked(8);
            // SIGKILL in the middle of the stream: some of its writes are in flight.
            osds.kill(2);
        }
    }
    let killed_at = writer.acked();
    c.wait_status("osd.2 down", Duration::from_secs(30), |s| s["osds"]["up"] == 3);
    writer.wait_acked(killed_at + 8);
    osds.start(2);
    wait_up(&c, 4);
    let restarted_at = writer.acked();
    writer.wait_acked(restarted_at + 8);
    let acked = writer.finish();
    // PG stats reach the monitors every few seconds: the last puts may take that long to
    // be counted.
    let n = acked.len() as u64;
    let status = c.wait_status(
        "16 clean PGs counting every acknowledged put",
        Duration::from_secs(60),
        |s| s["pg_summary"]["states"]["active+clean"] == 16 && s["pg_summary"]["objects"] == n,
    );
    assert_eq!(status["pg_summary"]["degraded"], 0, "{status}");
    for (name, data) in &acked {
        assert!(get(&c, &work, name) == *data, "{name} (acknowledged) reads back");
    }
}

/// Increments of a counter xattr, each a guarded compound op that also appends a record:
/// only serialised, atomic ops leave every increment counted once and every record once.
#[test]
fn concurrent_writers_to_one_object_are_serialised() {
    use bytes::Bytes;
    use proto::ErrorCode;
    use proto::osd::{CmpOp, ObjectName, ObjectOp, OpResult};

    let (c, _osds, _work) = replicated_cluster(4);
    wait_clean(&c, 4);
    const TASKS: u32 = 6;
    const EACH: u32 = 8;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = client::ClientConfig::load(&c.config()).unwrap();
    let (data, counter) = runtime.block_on(async move {
        let mon = std::sync::Arc::new(client::MonClient::connect(config).unwrap());
        let objects = std::sync::Arc::new(client::objects::Objects::new(mon).await.unwrap());
        let name = ObjectName { namespace: String::new(), name: b"counter".to_vec() };
        let init = vec![
            ObjectOp::Create { exclusive: true },
            ObjectOp::SetXattr { name: "n".into(), value: b"0".to_vec() },
        ];
        objects.op("rbd", &name, init, Bytes::new()).await.unwrap();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (objects, name) = (objects.clone(), name.clone());
                tokio::spawn(async move {
                    let mut done = 0;
                    let mut conflicts = 0u32;
                    while done < EACH {
                        let get = vec![ObjectOp::GetXattr { name: "n".into() }];
                        let answer = objects.op("rbd", &name, get, Bytes::new()).await.unwrap();
                        let OpResult::Xattr(Some(n)) = &answer.results[0] else {
                            panic!("no counter: {:?}", answer.results)
                        };
                        let next =
                            String::from_utf8(n.clone()).unwrap().parse::<u32>().unwrap() + 1;
                        let record = format!("{task:02}:{done:02};");
                        let ops = vec![
                            ObjectOp::CmpXattr {
                                name: "n".into(),
                                op: CmpOp::Eq,
                                value: n.clone(),
                            },
                            ObjectOp::SetXattr { name: "n".into(), value: next.to_string().into() },
                            ObjectOp::Append { len: record.len() as u64 },
                        ];
                        match objects.op("rbd", &name, ops, Bytes::from(record)).await {
                            Ok(_) => done += 1,
                            Err(e) if e.code() == Some(ErrorCode::Canceled) => conflicts += 1,
                            Err(e) => panic!("task {task}: {e}"),
                        }
                    }
                    conflicts
                })
            })
            .collect();
        let mut conflicts = 0;
        for task in tasks {
            conflicts += task.await.unwrap();
        }
        eprintln!("{conflicts} guarded increments lost a race and were retried");
        // Bad ops are refused with clear errors, and nothing is changed.
        let past_limit = vec![ObjectOp::Write { offset: 128 << 20, len: 1 }];
        let e = objects.op("rbd", &name, past_limit, Bytes::from_static(b"x")).await.unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let short = vec![ObjectOp::WriteFull { len: 10 }];
        let e = objects.op("rbd", &name, short, Bytes::from_static(b"12345")).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Invalid), "{e}");
        assert!(e.to_string().contains("ops take 10 bytes"), "{e}");
        let all = vec![
            ObjectOp::Read { offset: 0, len: 1 << 20 },
            ObjectOp::GetXattr { name: "n".into() },
        ];
        let answer = objects.op("rbd", &name, all, Bytes::new()).await.unwrap();
        let OpResult::Xattr(Some(n)) = &answer.results[1] else { panic!("{:?}", answer.results) };
        (answer.data, String::from_utf8(n.clone()).unwrap())
    });
    assert_eq!(counter, (TASKS * EACH).to_string());
    let text = String::from_utf8(data.to_vec()).unwrap();
    let records: Vec<&str> = text.split_terminator(';').collect();
    assert_eq!(records.len() as u32, TASKS * EACH, "{text}");
    for task in 0..TASKS {
        // Each task's records appear once each, in its own order.
        let mine: Vec<String> = records
            .iter()
            .filter(|r| r.starts_with(&format!("{task:02}:")))
            .map(|r| r.to_string())
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("{task:02}:{i:02}")).collect();
        assert_eq!(mine, expected, "{text}");
    }
    drop(runtime);
}

#[test]
fn a_striped_object_spans_pieces_reads_sparse_ranges_as_zeros_and_is_removed_whole() {
    use bytes::Bytes;
    use client::striper::Striper;

    let (c, _osds, _work) = replicated_cluster(8);
    wait_clean(&c, 8);
    const MIB: u64 = 1 << 20;
    let first = pattern(7, (3 * MIB + MIB / 2) as usize);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = client::ClientConfig::load(&c.config()).unwrap();
    let first_c = first.clone();
    let pieces_listed = runtime.block_on(async move {
        let mon = std::sync::Arc::new(client::MonClient::connect(config).unwrap());
        let objects = std::sync::Arc::new(client::objects::Objects::new(mon).await.unwrap());
        let striper = Striper::new(objects, "rbd", MIB);
        assert_eq!(striper.stat("img").await.unwrap(), None);
        striper.write("img", 0, Bytes::from(first_c.clone())).await.unwrap();
        assert_eq!(striper.stat("img").await.unwrap(), Some((first_c.len() as u64, MIB)));
        assert!(striper.read("img", 0, u64::MAX).await.unwrap() == first_c);
        // Across a piece boundary.
        let across = striper.read("img", MIB - 10, 20).await.unwrap();
        assert!(across == first_c[(MIB - 10) as usize..(MIB + 10) as usize]);
        // Past the end, leaving pieces 4 and 5 unwritten: they read as zeros.
        striper.write("img", 6 * MIB + 100, Bytes::from_static(b"0123456789")).await.unwrap();
        assert_eq!(striper.stat("img").await.unwrap(), Some((6 * MIB + 110, MIB)));
        let gap = striper.read("img", 3 * MIB, 3 * MIB + 110).await.unwrap();
        assert_eq!(gap.len() as u64, 3 * MIB + 110);
        assert!(gap[..(MIB / 2) as usize] == first_c[(3 * MIB) as usize..]);
        assert!(gap[(MIB / 2) as usize..(3 * MIB + 100) as usize].iter().all(|&b| b == 0));
        assert_eq!(&gap[(3 * MIB + 100) as usize..], b"0123456789");
        // A smaller write later does not shrink the size.
        striper.write("img", 5, Bytes::from_static(b"xy")).await.unwrap();
        assert_eq!(striper.stat("img").await.unwrap().unwrap().0, 6 * MIB + 110);
        striper
    });
    let mut names: Vec<String> = c.ok(&["obj", "ls", "rbd"]).lines().map(String::from).collect();
    names.sort();
    assert_eq!(
        names,
        (0..4).chain([6]).map(|i| format!("img.{i:016x}")).collect::<Vec<_>>(),
        "pieces 4 and 5 were never written"
    );
    let mut expected = first.clone();
    expected[5..7].copy_from_slice(b"xy");
    runtime.block_on(async {
        let read = pieces_listed.read("img", 0, 3 * MIB + MIB / 2).await.unwrap();
        assert!(read == expected);
        pieces_listed.remove("img").await.unwrap();
        assert_eq!(pieces_listed.stat("img").await.unwrap(), None);
    });
    assert_eq!(c.ok(&["obj", "ls", "rbd"]).trim(), "", "every piece is removed");
    drop(pieces_listed);
    drop(runtime);
}

/// Tries to write `bytes` as `name`: the CLI's error text if the write was refused.
fn try_put(c: &Cluster, dir: &std::path::Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let file = dir.join(format!("{name}.in"));
    std::fs::write(&file, bytes).unwrap();
    let out = c.cairn(&["obj", "put", "rbd", name, path_str(&file), "--timeout", "60"]);
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into()) }
}

#[test]
fn a_full_osd_refuses_writes_while_reads_and_deletes_work_and_nothing_is_lost() {
    let c = Cluster::start(3);
    let work = c.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let bad = c.fails(&["osd", "create", "--data", path_str(&work.join("x")), "--capacity", "0"]);
    assert!(bad.contains("--capacity must be above 0"), "{bad}");
    let bad = c.fails(&["osd", "create", "--data", path_str(&work.join("x")), "--capacity", "9Q"]);
    assert!(bad.contains("the unit must be K, M, G or T"), "{bad}");
    // Small OSDs: each holds a copy of everything, so all three fill together.
    let _osds = Osds::create_with(&c, 3, &["--capacity", "160M"]);
    wait_up(&c, 3);
    c.ok(&["pool", "create", "rbd", "replicated", "--size", "3", "--pg-num", "8"]);
    wait_clean(&c, 8);

    const OBJECT: usize = 4 << 20;
    let mut written = Vec::new();
    let refused = loop {
        let i = written.len() as u32;
        assert!(i < 60, "60 objects of 4 MiB went into OSDs of 160 MiB");
        match try_put(&c, &work, &format!("o{i}"), &pattern(i, OBJECT)) {
            Ok(()) => written.push(i),
            Err(e) => break e,
        }
    };
    assert!(refused.contains("is full"), "{refused}");
    assert!(refused.contains("deletes work"), "{refused}");
    // Full at 95% of 160 MiB: some 38 objects, less what the store itself takes.
    assert!((25..=39).contains(&written.len()), "{} objects written", written.len());
    let status = c.wait_status("OSD_FULL", Duration::from_secs(30), |s| {
        check_codes(s).contains(&"OSD_FULL".to_owned())
    });
    assert_eq!(status["health"], "HEALTH_ERR", "{status}");
    // Small writes too, to any object; reads of everything written still work.
    let small = try_put(&c, &work, "small", b"x").expect_err("a write to a full cluster");
    assert!(small.contains("is full"), "{small}");
    for &i in &written {
        assert!(get(&c, &work, &format!("o{i}")) == pattern(i, OBJECT), "o{i} read back");
    }

    // Deleting frees space, and writes resume once the OSDs have measured it.
    let (gone, kept) = written.split_at(written.len() / 2);
    for i in gone {
        c.ok(&["obj", "rm", "rbd", &format!("o{i}")]);
    }
    common::wait_for("writes to resume", Duration::from_secs(30), || {
        try_put(&c, &work, "after", &pattern(999, OBJECT))
    });
    c.wait_status("OSD_FULL cleared", Duration::from_secs(30), |s| {
        !check_codes(s).contains(&"OSD_FULL".to_owned())
    });
    for &i in kept {
        assert!(get(&c, &work, &format!("o{i}")) == pattern(i, OBJECT), "o{i} read back");
    }
    assert!(get(&c, &work, "after") == pattern(999, OBJECT));
    let gone_read = c.fails(&["obj", "get", "rbd", &format!("o{}", gone[0]), "/dev/null"]);
    assert!(gone_read.contains("does not exist"), "{gone_read}");
}
