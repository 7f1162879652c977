//! vimgeo's ground tools, built on the onboard crate (`vimgeo-onboard`) and the system GDAL: [`build`]
//! turns orthophotos into tile caches, [`sim`] flies the onboard pipeline in closed loop over an orthophoto
//! (and generates training pairs). None of it goes onto the aircraft.

pub mod build;
pub mod sim;
