//! Help a newcomer can read: `clipdex --help` lists the commands grouped by task, in the order
//! a user meets them ([`GROUPS`]); a command's `--help` lists only the global options that
//! command uses ([`GLOBALS_USED`]: the others stay accepted, hidden, so scripts keep working);
//! and the everyday commands end their help with examples ([`EXAMPLES`]).
//!
//! clap has no groups of subcommands, so the root's list is written into its help template
//! from these tables; a test checks them against the real list of subcommands.

use clap::CommandFactory;

use super::Cli;

/// The commands by task, in the order `clipdex --help` lists them.
pub const GROUPS: &[(&str, &[&str])] = &[
    ("Library", &["add", "index", "watch", "serve", "roots", "remove", "worker"]),
    ("Search", &["search", "similar", "crop-search", "show", "tags", "people", "places"]),
    (
        "Models",
        &[
            "tag", "describe", "autotag", "caption", "ask", "match", "segment", "ocr", "faces", "embed", "finetune",
            "eval", "models",
        ],
    ),
    (
        "Maintenance",
        &["stats", "config", "failures", "duplicates", "reindex", "migrate", "bench", "completions", "man"],
    ),
];

/// The global options (by id) each command uses; every other global option is hidden from its
/// `--help`. A command missing here shows them all.
pub const GLOBALS_USED: &[(&str, &[&str])] = &[
    ("add", &["db", "model"]),
    (
        "index",
        &["db", "model", "text_model", "device", "precision", "max_pixels", "video_interval", "video_max_frames"],
    ),
    (
        "watch",
        &["db", "model", "text_model", "device", "precision", "max_pixels", "video_interval", "video_max_frames"],
    ),
    (
        "serve",
        &[
            "db",
            "model",
            "text_model",
            "device",
            "precision",
            "max_pixels",
            "video_interval",
            "video_max_frames",
            "seg_model",
            "caption_model",
            "vqa_model",
            "itm_model",
        ],
    ),
    ("roots", &["db"]),
    ("remove", &["db"]),
    (
        "worker",
        &["db", "model", "text_model", "device", "precision", "max_pixels", "video_interval", "video_max_frames"],
    ),
    ("search", &["db", "model", "text_model", "device", "precision", "max_pixels", "seg_model", "itm_model"]),
    ("similar", &["db", "model", "device", "precision", "max_pixels"]),
    ("crop-search", &["db", "model", "text_model", "device", "precision", "max_pixels", "seg_model"]),
    ("show", &["db"]),
    ("places", &["db"]),
    ("tags", &["db"]),
    ("people", &["db"]),
    ("tag", &["db", "model", "text_model", "device", "precision", "max_pixels"]),
    ("describe", &["db", "model", "text_model", "device", "precision", "max_pixels"]),
    ("autotag", &["db", "model", "text_model", "device", "precision"]),
    ("caption", &["db", "caption_model", "device", "precision", "max_pixels"]),
    ("ask", &["vqa_model", "device", "precision", "max_pixels"]),
    ("match", &["itm_model", "device", "precision", "max_pixels"]),
    ("segment", &["seg_model", "device", "max_pixels"]),
    ("ocr", &["db", "max_pixels"]),
    ("faces", &["max_pixels"]),
    ("embed", &["model", "text_model", "device", "precision", "max_pixels"]),
    ("finetune", &["db", "model", "device", "precision", "max_pixels"]),
    ("eval", &["model", "text_model", "device", "precision", "max_pixels"]),
    ("stats", &["db"]),
    ("failures", &["db"]),
    ("duplicates", &["db", "max_pixels"]),
    (
        "reindex",
        &["db", "model", "text_model", "device", "precision", "max_pixels", "video_interval", "video_max_frames"],
    ),
    ("migrate", &["db"]),
    ("config", &["db"]),
    ("bench", &["db", "model", "text_model", "device"]),
    ("models", &[]),
    ("completions", &[]),
    ("man", &[]),
];

/// Examples that end a command's help.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "config",
        "Examples:
  # What the library uses
  clipdex config list
  # Caption with another model from now on (every command, and a running server)
  clipdex config set caption_model Salesforce/blip-image-captioning-large
  # Back to the default
  clipdex config set caption_model default",
    ),
    (
        "add",
        "Examples:
  # A folder of photos, then index it
  clipdex add ~/Pictures && clipdex index
  # Two folders into a library of their own
  clipdex --db ~/clipdex-family add ~/Pictures/family /mnt/usb/photos",
    ),
    (
        "index",
        "Examples:
  # Embed what is new or changed since the last run
  clipdex index
  # Also forget the photos of a drive that is gone for good
  clipdex index --prune",
    ),
    (
        "serve",
        "Examples:
  # The web UI at http://127.0.0.1:7878/, indexing meanwhile
  clipdex serve
  # On the network, behind a token
  clipdex serve --bind 0.0.0.0:7878 --token \"$(openssl rand -hex 16)\"
  # As a systemd user service, started at login
  clipdex serve --print-systemd-unit > ~/.config/systemd/user/clipdex.service
  systemctl --user daemon-reload && systemctl --user enable --now clipdex",
    ),
    (
        "watch",
        "Examples:
  # Index, then keep following the folders (Ctrl-C stops)
  clipdex watch
  # One JSON line per pass, for a log
  clipdex watch --json >> clipdex-watch.log",
    ),
    (
        "worker",
        "Examples:
  # On a GPU box that sees the server's /srv/photos as /mnt/nas/photos
  clipdex --db postgres://db/photos worker --path-map /srv/photos=/mnt/nas/photos",
    ),
    (
        "search",
        "Examples:
  # Photos that look like the words
  clipdex search \"a dog running on the beach\"
  # Words and filters in one query: a tag, a folder, a year, no night shots; ten results
  clipdex search \"birthday cake tag:party in:/photos/family after:2023 before:2024 -night\" -k 10
  # The newest good matches first, for a script
  clipdex search \"sunset over the sea\" --min-score 60 --sort=-date --json",
    ),
    (
        "similar",
        "Examples:
  # Photos like a file (in the library or not)
  clipdex similar ~/Downloads/holiday.jpg
  # Photos like a search result, by its id
  clipdex similar '#1042' -k 5",
    ),
    (
        "crop-search",
        "Examples:
  # The regions that show the words, with their boxes
  clipdex crop-search \"red umbrella\" -k 10
  # Also write each crop as a PNG
  clipdex crop-search \"a cat's face\" --out ~/crops",
    ),
    (
        "show",
        "Examples:
  # A search result, by its id
  clipdex show '#1042'
  # A file of the library, as the API's JSON
  clipdex show ~/Pictures/2024/beach.jpg --json",
    ),
    (
        "places",
        "Examples:
  # Where the photos were taken, most photos first
  clipdex places
  # Then search one of them (any language GeoNames knows the name in)
  clipdex search 'place:Lisboa after:2024'",
    ),
    (
        "tag",
        "Examples:
  # Which of these labels fits each photo
  clipdex tag --labels \"cat,dog,car\" a.jpg b.jpg
  # The ten likeliest entries of the built-in vocabulary
  clipdex tag photo.jpg",
    ),
    (
        "autotag",
        "Examples:
  # Tag every photo with the built-in vocabulary (later passes tag new photos)
  clipdex autotag
  # Your own labels, at most 3 tags a photo
  clipdex autotag --vocab my-labels.txt --max-tags 3",
    ),
    (
        "caption",
        "Examples:
  # A caption of each photo
  clipdex caption a.jpg b.jpg
  # Caption the whole library (then `search --in captions` and `show` use them)
  clipdex caption --library",
    ),
    (
        "people",
        "Examples:
  # The persons, then name one and merge another into it
  clipdex people
  clipdex people --name 12 Anna
  clipdex people --merge 12 31
  # Face 840 is not Anna; regroup everything (names and corrections are kept)
  clipdex people --not 840 Anna
  clipdex people --recluster --max-distance 0.45",
    ),
    (
        "ask",
        "Examples:
  clipdex ask photo.jpg \"how many people are there?\"",
    ),
    (
        "match",
        "Examples:
  clipdex match photo.jpg --text \"a dog on a sofa\" --text \"a cat on a sofa\"",
    ),
    (
        "segment",
        "Examples:
  # Masks, overlays and crops of the dog and the ball
  clipdex segment photo.jpg --prompt \"a dog\" --prompt \"a ball\" --out masks/",
    ),
    (
        "ocr",
        "Examples:
  # The text of a receipt, with the models `clipdex models download ocr` fetched
  clipdex ocr receipt.jpg
  # Scanned pages as JSON, for a script, with PP-OCR models of your own
  clipdex ocr --ocr-model ~/models/pp-ocr --json scans/page1.png scans/page2.png
  # Read the text of every photo in the library, then find the bill by its number
  clipdex ocr --library
  clipdex search --in text 48213",
    ),
    (
        "faces",
        "Examples:
  # The faces in a photo, with the models `clipdex models download faces` fetched
  clipdex faces party.jpg
  # As JSON (boxes, scores, landmarks), ignoring faces under 60 px, with dlib's models of your own
  clipdex faces --face-model ~/models/dlib --min-face 60 --json *.jpg",
    ),
    (
        "embed",
        "Examples:
  clipdex embed --image photo.jpg --text \"a dog\" --json",
    ),
    (
        "finetune",
        "Examples:
  # Captioned pairs (JSON Lines {\"image\", \"text\"}) into a model folder
  clipdex finetune --pairs pairs.jsonl --out ~/models/my-clip
  # One folder per class; then move the library to the fine-tuned model
  clipdex finetune --folders ~/labelled --out ~/models/my-clip
  clipdex reindex --model ~/models/my-clip",
    ),
    (
        "eval",
        "Examples:
  # Accuracy on a folder per class, with the photo prompt ensemble beside the single prompt
  clipdex eval zeroshot ~/labelled --templates photo",
    ),
    (
        "duplicates",
        "Examples:
  # The groups of near-duplicates, with the photo to keep
  clipdex duplicates
  # Move the extra copies out of the library (and back with --restore)
  clipdex duplicates --move-to ~/duplicates",
    ),
    (
        "reindex",
        "Examples:
  # Move the library to a larger model (searches use the old vectors until it is done)
  clipdex reindex --model openai/clip-vit-large-patch14",
    ),
    (
        "models",
        "Examples:
  # The recommended CLIPs, with sizes and published quality
  clipdex models
  # Fetch one once (into the Hugging Face cache), then use it offline
  clipdex models download laion/CLIP-ViT-B-32-laion2B-s34B-b79K
  # The OCR and face models, checked and unpacked where `ocr` and `faces` find them
  clipdex models download ocr
  clipdex models download faces
  # On a machine without network, from the package file copied there
  clipdex models download ocr --from /media/usb",
    ),
    (
        "completions",
        "Examples:
  # bash (new shells complete clipdex's commands and options)
  clipdex completions bash > ~/.local/share/bash-completion/completions/clipdex
  # zsh: into a folder of your $fpath
  clipdex completions zsh > ~/.zfunc/_clipdex
  # fish
  clipdex completions fish > ~/.config/fish/completions/clipdex.fish",
    ),
    (
        "man",
        "Examples:
  # Read it now
  clipdex man | man -l -
  # Install the pages (then `man clipdex`, `man clipdex-search`)
  clipdex man --out ~/.local/share/man/man1",
    ),
    (
        "migrate",
        "Examples:
  clipdex --db ~/.local/share/clipdex migrate --to postgres://clipdex:secret@localhost/photos",
    ),
];

/// The `clipdex` command with the help of this module: grouped commands, each command's
/// unused global options hidden, examples.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let globals: Vec<clap::Arg> = cmd.get_arguments().filter(|a| a.is_global_set()).cloned().collect();
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    for name in &names {
        let used = GLOBALS_USED.iter().find(|(n, _)| n == name).map(|(_, used)| *used);
        let examples = EXAMPLES.iter().find(|(n, _)| n == name).map(|(_, text)| *text);
        cmd = cmd.mut_subcommand(name, |mut sub| {
            // A command that already holds an argument of that id is left alone by clap's
            // propagation of the globals: each copy parses exactly as the global does, under
            // its own heading, or hidden where the command does not use it.
            for arg in &globals {
                let shown = used.is_none_or(|used| used.contains(&arg.get_id().as_str()));
                let arg = arg.clone();
                sub = sub.arg(if shown { arg.help_heading("Global options") } else { arg.hide(true) });
            }
            let Some(text) = examples else { return sub };
            // A command's own text after its long help (the query syntax of `search`) comes
            // before the examples, which end both helps.
            let long = sub.get_after_long_help().map(|own| format!("{own}\n\n{text}"));
            let sub = sub.after_help(text);
            match long {
                Some(long) => sub.after_long_help(long),
                None => sub,
            }
        });
    }
    let list = grouped_list(&cmd);
    cmd.help_template(format!(
        "{{before-help}}{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{list}Options:\n{{options}}\n\
         `clipdex help COMMAND` (or `clipdex COMMAND --help`) shows a command's options and examples.{{after-help}}"
    ))
}

/// The subcommands under their group headings, each with its one-line description.
fn grouped_list(cmd: &clap::Command) -> String {
    const WIDTH: usize = 80;
    let mut listed: Vec<&str> = Vec::new();
    let mut groups: Vec<(&str, Vec<&str>)> = GROUPS.iter().map(|(h, names)| (*h, names.to_vec())).collect();
    let others: Vec<&str> = cmd
        .get_subcommands()
        .map(|s| s.get_name())
        .filter(|n| !GROUPS.iter().any(|(_, names)| names.contains(n)))
        .collect();
    if !others.is_empty() {
        groups.push(("Other", others));
    }
    let column = groups.iter().flat_map(|(_, names)| names.iter().map(|n| n.len())).max().unwrap_or(0) + 4;
    let mut text = String::new();
    for (heading, names) in groups {
        text.push_str(&format!("{heading}:\n"));
        for name in names {
            let Some(sub) = cmd.find_subcommand(name) else { continue };
            listed.push(name);
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            let mut line = format!("  {name:<width$}", width = column - 2);
            let mut used = line.len();
            for word in about.split_whitespace() {
                if used + 1 + word.len() > WIDTH && used > column {
                    line.push('\n');
                    line.push_str(&" ".repeat(column));
                    used = column;
                } else if used > column {
                    line.push(' ');
                    used += 1;
                }
                line.push_str(word);
                used += word.chars().count();
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subcommands() -> Vec<String> {
        Cli::command().get_subcommands().map(|s| s.get_name().to_string()).collect()
    }

    #[test]
    fn every_command_is_in_one_group_and_the_tables_name_only_real_commands() {
        let real = subcommands();
        let grouped: Vec<&str> = GROUPS.iter().flat_map(|(_, names)| names.iter().copied()).collect();
        for name in &real {
            let n = grouped.iter().filter(|g| **g == name).count();
            assert_eq!(n, 1, "`{name}` is listed {n} times in help::GROUPS");
        }
        for name in grouped.iter().chain(GLOBALS_USED.iter().map(|(n, _)| n)).chain(EXAMPLES.iter().map(|(n, _)| n)) {
            assert!(real.iter().any(|r| r == name), "help names `{name}`, which is no command");
        }
        for name in &real {
            assert!(GLOBALS_USED.iter().any(|(n, _)| n == name), "help::GLOBALS_USED does not say what `{name}` uses");
        }
    }

    #[test]
    fn the_globals_named_are_real_global_options() {
        let cmd = Cli::command();
        let globals: Vec<String> =
            cmd.get_arguments().filter(|a| a.is_global_set()).map(|a| a.get_id().to_string()).collect();
        for (name, used) in GLOBALS_USED {
            for id in *used {
                assert!(globals.iter().any(|g| g == id), "`{name}` uses `{id}`, which is no global option");
            }
        }
    }

    #[test]
    fn hidden_globals_still_parse_and_reach_the_options() {
        let matches = command()
            .try_get_matches_from(["clipdex", "search", "dog", "--video-interval", "3", "--caption-model", "m"])
            .expect("a hidden global option is still accepted");
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).expect("parsed");
        assert_eq!(cli.global.video_interval, 3.0);
        assert_eq!(cli.global.caption_model, "m");
        let before = command()
            .try_get_matches_from(["clipdex", "--seg-model", "s", "ask", "a.jpg", "q"])
            .expect("before the command too");
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&before).expect("parsed");
        assert_eq!(cli.global.seg_model, "s");
    }

    /// The words of a shell line, quotes removed; `&&` between commands, a redirection or a pipe
    /// and what follows dropped.
    fn commands_of(line: &str) -> Vec<Vec<String>> {
        let (mut commands, mut words, mut word, mut quote) = (vec![], vec![], String::new(), None);
        for c in line.chars().chain([' ']) {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => word.push(c),
                (None, '"' | '\'') => quote = Some(c),
                (None, ' ') if !word.is_empty() => words.push(std::mem::take(&mut word)),
                (None, ' ') => {}
                (None, c) => word.push(c),
            }
        }
        for w in words {
            match w.as_str() {
                "&&" => commands.push(vec![]),
                _ if commands.is_empty() => commands.push(vec![w]),
                _ => commands.last_mut().unwrap().push(w),
            }
        }
        for c in &mut commands {
            if let Some(at) = c.iter().position(|w| matches!(w.as_str(), ">>" | ">" | "|")) {
                c.truncate(at);
            }
        }
        commands
    }

    #[test]
    fn every_example_parses() {
        for (name, text) in EXAMPLES {
            let lines = text.lines().map(str::trim).filter(|l| l.starts_with("clipdex "));
            let mut n = 0;
            for words in lines.flat_map(commands_of) {
                n += 1;
                if let Err(e) = command().try_get_matches_from(&words) {
                    panic!("the example of `{name}` {words:?} does not parse: {e}");
                }
            }
            assert!(n > 0, "`{name}` has no example");
        }
    }

    #[test]
    fn the_command_checks_out() {
        command().debug_assert();
    }
}
