//! A tiny LL-HLS "packager" for tests: writes a low-latency media playlist and its part and
//! segment files into a directory over time, as the test says, each playlist version replaced
//! atomically (written aside, then renamed) so a reader never sees half of one. The target
//! duration is 4 s, so the origin holds a blocking reload up to 12 s: ample on a loaded machine.

use std::path::{Path, PathBuf};

pub struct LlHls {
    dir: PathBuf,
    /// Media sequence number of the first segment listed.
    first: u64,
    /// Complete segments: (msn, parts).
    done: Vec<(u64, u64)>,
    /// Parts of the segment in progress.
    parts: u64,
}

impl LlHls {
    /// Starts a playlist in `dir` (created) at media sequence `first`, with no segment yet.
    pub fn new(dir: &Path, first: u64) -> Self {
        std::fs::create_dir_all(dir).expect("ll-hls dir");
        let me = Self {
            dir: dir.to_path_buf(),
            first,
            done: Vec::new(),
            parts: 0,
        };
        me.write();
        me
    }

    /// The msn of the segment in progress.
    pub fn next_msn(&self) -> u64 {
        self.first + self.done.len() as u64
    }

    /// Writes one more part (`s{msn}.{n}.m4s`, `body`) of the segment in progress.
    pub fn add_part(&mut self, body: &[u8]) {
        let name = format!("s{}.{}.m4s", self.next_msn(), self.parts);
        std::fs::write(self.dir.join(name), body).expect("part");
        self.parts += 1;
        self.write();
    }

    /// Closes the segment in progress (`s{msn}.m4s`, `body`).
    pub fn finish_segment(&mut self, body: &[u8]) {
        let msn = self.next_msn();
        std::fs::write(self.dir.join(format!("s{msn}.m4s")), body).expect("segment");
        self.done.push((msn, self.parts));
        self.parts = 0;
        self.write();
    }

    fn write(&self) {
        let mut t = format!(
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:4\n#EXT-X-PART-INF:PART-TARGET=0.25\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.75\n#EXT-X-MEDIA-SEQUENCE:{}\n",
            self.first
        );
        for (msn, parts) in &self.done {
            for p in 0..*parts {
                t.push_str(&format!(
                    "#EXT-X-PART:DURATION=0.25,URI=\"s{msn}.{p}.m4s\"\n"
                ));
            }
            t.push_str(&format!("#EXTINF:1.0,\ns{msn}.m4s\n"));
        }
        let msn = self.next_msn();
        for p in 0..self.parts {
            t.push_str(&format!(
                "#EXT-X-PART:DURATION=0.25,URI=\"s{msn}.{p}.m4s\"\n"
            ));
        }
        t.push_str(&format!(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s{msn}.{}.m4s\"\n",
            self.parts
        ));
        let tmp = self.dir.join(".index.m3u8.tmp");
        std::fs::write(&tmp, t).expect("playlist");
        std::fs::rename(&tmp, self.dir.join("index.m3u8")).expect("rename playlist");
    }
}
