//! `clipdex places`: where the library's photos were taken, with counts.

use std::io::Write;

use clap::Args;
use serde_json::json;

use clipdex::Library;

/// `clipdex places`.
#[derive(Debug, Args)]
pub struct PlacesArgs {
    /// Print JSON: {"places": [{"city", "region", "country", "count"}], "located", "unplaced"}
    /// ("located": photos with GPS placed in a town; "unplaced": with GPS but more than 150 km
    /// from any town; photos without GPS are in neither).
    #[arg(long)]
    pub json: bool,
}

/// `clipdex places`: `COUNT  CITY, REGION, COUNTRY`, most photos first.
pub fn places(library: &Library, args: &PlacesArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let counts = library.place_counts()?;
    if args.json {
        writeln!(
            out,
            "{}",
            json!({ "places": counts.places, "located": counts.located, "unplaced": counts.unplaced })
        )?;
        return Ok(());
    }
    if counts.located == 0 {
        writeln!(out, "no photo has a GPS position")?;
        return Ok(());
    }
    for p in &counts.places {
        let region = p.region.as_deref().map(|r| format!(", {r}")).unwrap_or_default();
        writeln!(out, "{:>7}  {}{region}, {}", p.count, p.city, p.country)?;
    }
    if counts.unplaced > 0 {
        writeln!(out, "{:>7}  (a position more than 150 km from any town)", counts.unplaced)?;
    }
    Ok(())
}
