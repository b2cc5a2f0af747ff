//! Every evaluated design on the accuracy-drop vs throughput plane: which are on the front,
//! and the front as JSON and as an SVG plot (the chosen design marked).

use super::Point;
use plotters::prelude::*;

/// Mark the points no other point dominates (at most the drop and at least the throughput,
/// better in one).
pub fn mark_front(points: &mut [Point]) {
    let snapshot: Vec<(f64, f64)> = points.iter().map(|p| (p.accuracy_drop, p.throughput_fps)).collect();
    for (i, p) in points.iter_mut().enumerate() {
        let (d, f) = snapshot[i];
        p.on_front = !snapshot
            .iter()
            .enumerate()
            .any(|(j, &(dj, fj))| j != i && dj <= d && fj >= f && (dj < d || fj > f || j < i));
    }
}

/// The `--pareto` JSON: every point, front flags, the chosen one, and what the figures were
/// measured on (`sample`, see [`super::SearchSummary::sample`]).
pub fn to_json(model: &str, points: &[Point], sample: &str) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "throughput": format!("{sample}; the chosen design's reported_throughput_fps is the report's figure"),
        "accuracy_drop": "top-1 drop from the dense model on the calibration images, points",
        "points": points,
    })
}

/// The front as an SVG document: all points in grey, the front as a line, the chosen design
/// circled where the report puts it. `sample` says what the search's figures were measured
/// on (e.g. "statistics on 96 of 500 calibration images").
pub fn to_svg(model: &str, points: &[Point], sample: &str) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 480)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let max_drop = points.iter().map(|p| p.accuracy_drop).fold(0.5, f64::max) * 1.1;
        let min_drop = points.iter().map(|p| p.accuracy_drop).fold(0.0, f64::min) * 1.1;
        let max_fps =
            points.iter().map(|p| p.throughput_fps.max(p.reported_throughput_fps.unwrap_or(0.0))).fold(1.0, f64::max)
                * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{model}: accuracy drop vs throughput"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(min_drop..max_drop, 0.0..max_fps)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("top-1 drop on the calibration images (points)")
            .y_desc(format!("images/s ({sample})"))
            .draw()
            .map_err(err)?;
        let grey = RGBColor(170, 170, 170);
        chart
            .draw_series(points.iter().map(|p| Circle::new((p.accuracy_drop, p.throughput_fps), 2, grey.filled())))
            .map_err(err)?;
        let mut front: Vec<(f64, f64)> =
            points.iter().filter(|p| p.on_front).map(|p| (p.accuracy_drop, p.throughput_fps)).collect();
        front.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart.draw_series(LineSeries::new(front.iter().copied(), BLUE.stroke_width(2))).map_err(err)?;
        chart.draw_series(front.iter().map(|&p| Circle::new(p, 3, BLUE.filled()))).map_err(err)?;
        if let Some(c) = points.iter().find(|p| p.chosen) {
            // Where the report puts it; a line from where the search saw it.
            let fps = c.reported_throughput_fps.unwrap_or(c.throughput_fps);
            let at = (c.accuracy_drop, fps);
            if fps != c.throughput_fps {
                let seen = (c.accuracy_drop, c.throughput_fps);
                chart.draw_series([PathElement::new(vec![seen, at], RED.stroke_width(1))]).map_err(err)?;
            }
            chart.draw_series([Circle::new(at, 7, RED.stroke_width(2))]).map_err(err)?;
            let label = format!("chosen: {fps:.0} images/s (as reported)");
            chart.draw_series([Text::new(label, at, ("sans-serif", 14))]).map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(evaluation: usize, drop: f64, fps: f64) -> Point {
        Point {
            evaluation,
            accuracy_drop: drop,
            throughput_fps: fps,
            score: fps,
            accepted: false,
            on_front: false,
            chosen: false,
            reported_throughput_fps: None,
        }
    }

    #[test]
    fn front_keeps_only_undominated_points() {
        let mut points = vec![
            point(0, 0.0, 100.0),
            point(1, 0.5, 90.0),
            point(2, 0.5, 150.0),
            point(3, 1.0, 150.0),
            point(4, 0.5, 150.0),
        ];
        mark_front(&mut points);
        // 1 is dominated by 2; 3 by 2; 4 duplicates 2 (the first copy stays).
        assert_eq!(points.iter().map(|p| p.on_front).collect::<Vec<_>>(), [true, false, true, false, false]);
        points[2].chosen = true;
        let svg = to_svg("m", &points, "sampled").unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("chosen: 150 images/s (as reported)"));
        // The chosen design shows the report's figure, not the search's sample.
        points[2].reported_throughput_fps = Some(163.0);
        let svg = to_svg("m", &points, "statistics on 96 of 500 calibration images").unwrap();
        assert!(svg.contains("chosen: 163 images/s (as reported)") && !svg.contains("chosen: 150"));
        assert!(svg.contains("statistics on 96 of 500 calibration images"));
    }
}
