//! Manual pages and shell completions, made from the command line's definition and
//! the `-o` option table, so they cannot drift from what the program accepts.

use std::path::Path;

use clap::CommandFactory;
use clap_mangen::roff::{bold, italic, roman, Roff};

use super::option_list::{Form, OPTIONS};
use super::Cli;

/// Writes `man1/s3syncfs.1`, `man8/mount.s3syncfs.8` and the completions for bash,
/// zsh and fish (`completions/`) under `dir`.
pub fn write_all(dir: &Path) -> std::io::Result<()> {
    let files: [(&str, Vec<u8>); 5] = [
        ("man1/s3syncfs.1", main_page()?),
        ("man8/mount.s3syncfs.8", helper_page()),
        (
            "completions/s3syncfs.bash",
            completion(clap_complete::Shell::Bash),
        ),
        (
            "completions/_s3syncfs",
            completion(clap_complete::Shell::Zsh),
        ),
        (
            "completions/s3syncfs.fish",
            completion(clap_complete::Shell::Fish),
        ),
    ];
    for (name, bytes) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes)?;
    }
    Ok(())
}

fn completion(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "s3syncfs", &mut out);
    out
}

/// Markdown's code quotes mean nothing in a manual page.
fn plain(text: &str) -> String {
    text.replace('`', "")
}

/// s3syncfs(1): the overview clap_mangen makes, then every subcommand with its usage
/// and each of its arguments.
pub fn main_page() -> std::io::Result<Vec<u8>> {
    let mut cli = Cli::command();
    cli.build();
    let mut out = Vec::new();
    // Not clap_mangen's subcommand list: it names a page per subcommand, and here the
    // subcommands are sections of this one.
    let overview = clap_mangen::Man::new(cli.clone());
    overview.render_title(&mut out)?;
    overview.render_name_section(&mut out)?;
    overview.render_synopsis_section(&mut out)?;
    overview.render_description_section(&mut out)?;
    overview.render_options_section(&mut out)?;
    let mut roff = Roff::new();
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("s3syncfs {}", sub.get_name());
        roff.control("SH", [name.to_uppercase().as_str()]);
        let usage = sub.clone().bin_name(&name).render_usage().to_string();
        roff.text([bold(usage.trim_start_matches("Usage: ").to_string())]);
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            roff.control("PP", []).text([roman(about.to_string())]);
        }
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            let mut head = Vec::new();
            match arg.get_long() {
                Some(long) => head.push(bold(format!("--{long}"))),
                None => head.push(italic(arg.get_id().as_str().to_uppercase())),
            }
            if arg.get_long().is_some() && arg.get_action().takes_values() {
                let value = arg
                    .get_value_names()
                    .and_then(|v| v.first())
                    .map_or_else(|| arg.get_id().as_str().to_uppercase(), |v| v.to_string());
                head.push(roman(" "));
                head.push(italic(value));
            }
            roff.control("TP", []).text(head);
            let help = arg.get_long_help().or(arg.get_help());
            let mut body = help.map(|h| h.to_string()).unwrap_or_default();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .filter(|v| v != "false")
                .collect();
            if !defaults.is_empty() {
                body.push_str(&format!(" [default: {}]", defaults.join(", ")));
            }
            roff.text([roman(body)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]).text([
        bold("mount.s3syncfs"),
        roman("(8), the files in /usr/share/doc/s3syncfs (CONFIGURATION.md, SEMANTICS.md, TROUBLESHOOTING.md)"),
    ]);
    roff.to_writer(&mut out)?;
    Ok(out)
}

/// mount.s3syncfs(8): the helper mount(8) runs, with every `-o` option.
pub fn helper_page() -> Vec<u8> {
    let mut roff = Roff::new();
    let version = env!("CARGO_PKG_VERSION");
    roff.control("TH", ["MOUNT.S3SYNCFS", "8", "", version, "s3syncfs"]);
    roff.control("SH", ["NAME"]).text([roman(
        "mount.s3syncfs - mount an S3 bucket through a local disk cache",
    )]);
    roff.control("SH", ["SYNOPSIS"]).text([
        bold("mount.s3syncfs"),
        roman(" "),
        italic("BUCKET[:PREFIX] MOUNTPOINT"),
        roman(" [-sfnv] [-o "),
        italic("OPTIONS"),
        roman("]"),
    ]);
    roff.control("SH", ["DESCRIPTION"]).text([roman(
        "mount(8) runs this helper for file systems of type s3syncfs, and fuse3's mount.fuse3 \
         runs s3syncfs for type fuse.s3syncfs. It returns once the mount answers, or exits 32 \
         with the reason. Every option below is also a long option of s3syncfs mount, with \
         dashes for underscores (cache_size=10G is --cache-size 10G). Later options win.",
    )]);
    roff.control("SH", ["OPTIONS"]);
    for o in OPTIONS {
        let mut head = vec![bold(o.name)];
        if o.form != Form::Switch {
            head.push(roman("="));
            head.push(italic("VALUE"));
        }
        for alias in o.aliases {
            head.push(roman(", "));
            head.push(bold(*alias));
        }
        roff.control("TP", []).text(head);
        let mut body = plain(o.help);
        if !o.default.is_empty() {
            body.push_str(&format!(". Default: {}.", plain(o.default)));
        }
        roff.text([roman(body)]);
    }
    roff.control("SH", ["GENERIC OPTIONS"]).text([roman(
        "Accepted and ignored: defaults, rw, _netdev, nofail, noauto, auto, user, users, \
         nouser, owner, group, x-systemd.* and any x-*, comment=, noatime, relatime, \
         exec, noexec, suid, nosuid, dev, nodev, async. nodev and nosuid are always set.",
    )]);
    roff.control("SH", ["FSTAB"]).text([roman(
        "_netdev makes systemd wait for the network; nofail keeps a bucket that is down from \
         holding up the boot:",
    )]);
    roff.control("PP", []).text([roman(
        "mybucket:/photos /mnt/photos s3syncfs _netdev,nofail,endpoint=https://us-east-1.linodeobjects.com,cache_dir=/var/cache/s3syncfs/photos,credentials_file=/etc/passwd-s3syncfs 0 0",
    )]);
    roff.control("PP", []).text([roman(
        "s3syncfs doctor checks such a line, the endpoint, the credentials, the bucket and \
         the cache dir before a mount is tried.",
    )]);
    roff.control("SH", ["SEE ALSO"]).text([
        bold("s3syncfs"),
        roman("(1), "),
        bold("mount"),
        roman("(8), "),
        bold("fstab"),
        roman("(5)"),
    ]);
    let mut out = Vec::new();
    let _ = roff.to_writer(&mut out); // a Vec takes every write
    out
}

/// Lets `s3syncfs generate-manual DIR` report a failure in words.
pub fn write_or_explain(dir: &Path) -> anyhow::Result<()> {
    write_all(dir).map_err(|err| {
        anyhow::anyhow!(
            "cannot write the manual pages into {}: {err}; give a writable directory",
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_page_has_every_subcommand_and_its_options() {
        let page = String::from_utf8(main_page().unwrap()).unwrap();
        for sub in ["MOUNT", "UNMOUNT", "STATUS", "VERIFY", "SYNC", "DOCTOR"] {
            assert!(
                page.contains(&format!(".SH \"S3SYNCFS {sub}\"")),
                "no {sub} in\n{page}"
            );
        }
        assert!(
            !page.contains("GENERATE-MANUAL"),
            "a hidden command is shown"
        );
        assert!(page.contains("\\-\\-cache\\-size"), "{page}");
    }

    #[test]
    fn the_helper_page_has_every_option() {
        let page = String::from_utf8(helper_page()).unwrap();
        for o in OPTIONS {
            let name = o.name;
            assert!(
                page.contains(&format!("\\fB{name}\\fR")),
                "no {name} in\n{page}"
            );
        }
    }
}
