//! Pools (the seed's ClusterManager): nodes added, removed and marked node by node, picks,
//! events, health and metrics.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use clusterkit::{BalancerOptions, Cluster, Health, Node, Strategy};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::errors::{bytes_arg, invalid, json_to_py, opt_seconds, str_arg, IntoPy};
use crate::events::Events;
use crate::pick::Pick;

/// One pool: a cluster of nodes with its balancer.
#[pyclass(module = "clusterkit._native", frozen)]
#[derive(Debug)]
pub struct Pool {
    pub(crate) cluster: Cluster,
}

fn health_arg(s: &str) -> PyResult<Health> {
    match s {
        "healthy" => Ok(Health::Healthy),
        "unhealthy" => Ok(Health::Unhealthy),
        "draining" => Ok(Health::Draining),
        _ => Err(invalid(
            "health",
            format!("must be \"healthy\", \"unhealthy\" or \"draining\", got {s:?}"),
        )),
    }
}

#[pymethods]
impl Pool {
    /// A standalone pool (not from a config document): `strategy` as in the config.
    #[new]
    #[pyo3(signature = (name, strategy=None))]
    fn new(name: &Bound<'_, PyAny>, strategy: Option<&Bound<'_, PyAny>>) -> PyResult<Pool> {
        let name = str_arg(name, "name")?;
        let strategy = match strategy {
            None => Strategy::default(),
            Some(s) => {
                let s = str_arg(s, "strategy")?;
                Strategy::from_str(&s).py()?
            }
        };
        Ok(Pool {
            cluster: Cluster::new(name, BalancerOptions::new(strategy)).py()?,
        })
    }

    #[getter]
    fn name(&self) -> &str {
        self.cluster.name()
    }

    #[getter]
    fn strategy(&self) -> &'static str {
        self.cluster.options().strategy.as_str()
    }

    fn set_strategy(&self, strategy: &Bound<'_, PyAny>) -> PyResult<()> {
        let s = str_arg(strategy, "strategy")?;
        let s = Strategy::from_str(&s).py()?;
        self.cluster.set_strategy(s).py()
    }

    /// Adds one node. `metadata`: a dict of str to str.
    #[pyo3(signature = (id, host, port, weight=None, zone=None, metadata=None))]
    fn add_node(
        &self,
        id: &Bound<'_, PyAny>,
        host: &Bound<'_, PyAny>,
        port: &Bound<'_, PyAny>,
        weight: Option<&Bound<'_, PyAny>>,
        zone: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (id, host) = (str_arg(id, "id")?, str_arg(host, "host")?);
        let port: u16 = port
            .extract()
            .map_err(|_| invalid("port", "must be an int in 1..=65535"))?;
        let mut node = Node::new(id, host, port).py()?;
        if let Some(w) = weight.filter(|w| !w.is_none()) {
            let w: u32 = w
                .extract()
                .map_err(|_| invalid("weight", "must be an int in 1..=256"))?;
            node = node.with_weight(w).py()?;
        }
        if let Some(z) = zone.filter(|z| !z.is_none()) {
            node = node.with_zone(str_arg(z, "zone")?).py()?;
        }
        if let Some(m) = metadata.filter(|m| !m.is_none()) {
            let map: BTreeMap<String, String> = m
                .extract()
                .map_err(|_| invalid("metadata", "must be a dict of str to str"))?;
            node = node.with_metadata_map(map).py()?;
        }
        self.cluster.add(node).py()
    }

    fn remove_node(&self, id: &Bound<'_, PyAny>) -> PyResult<()> {
        self.cluster.remove(&str_arg(id, "id")?).py().map(|_| ())
    }

    #[pyo3(signature = (id, health, reason=None))]
    fn set_health(
        &self,
        id: &Bound<'_, PyAny>,
        health: &Bound<'_, PyAny>,
        reason: Option<&str>,
    ) -> PyResult<()> {
        let h = health_arg(&str_arg(health, "health")?)?;
        self.cluster
            .set_health(
                &str_arg(id, "id")?,
                h,
                reason.unwrap_or("marked by operator"),
            )
            .py()
    }

    fn set_weight(&self, id: &Bound<'_, PyAny>, weight: &Bound<'_, PyAny>) -> PyResult<()> {
        let w: u32 = weight
            .extract()
            .map_err(|_| invalid("weight", "must be an int in 1..=256"))?;
        self.cluster.set_weight(&str_arg(id, "id")?, w).py()
    }

    fn drain(&self, id: &Bound<'_, PyAny>) -> PyResult<()> {
        self.cluster.drain(&str_arg(id, "id")?).py()
    }

    /// Reports a call's outcome to node `id` without a pick (passive health).
    #[pyo3(signature = (id, latency=None))]
    fn report_success(
        &self,
        id: &Bound<'_, PyAny>,
        latency: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let l = opt_seconds(latency, "latency")?.unwrap_or(Duration::ZERO);
        self.cluster.report_success(&str_arg(id, "id")?, l).py()
    }

    fn report_failure(&self, id: &Bound<'_, PyAny>) -> PyResult<()> {
        self.cluster.report_failure(&str_arg(id, "id")?).py()
    }

    /// Each node with its health and counters (dicts).
    fn nodes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let l = PyList::empty(py);
        for n in self.cluster.nodes() {
            l.append(json_to_py(py, &n.to_json())?)?;
        }
        Ok(l)
    }

    fn node(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match self.cluster.get(&str_arg(id, "id")?) {
            Some(n) => json_to_py(py, &n.to_json()),
            None => Ok(py.None()),
        }
    }

    fn __len__(&self) -> usize {
        self.cluster.len()
    }

    #[getter]
    fn healthy_count(&self) -> usize {
        self.cluster.healthy_count()
    }

    #[getter]
    fn in_panic(&self) -> bool {
        self.cluster.in_panic()
    }

    fn metrics(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json_to_py(py, &self.cluster.metrics())
    }

    /// A node for one request (following `key` for hashing strategies).
    #[pyo3(signature = (key=None))]
    fn pick(&self, key: Option<&Bound<'_, PyAny>>) -> PyResult<Pick> {
        let lb = self.cluster.balancer();
        let p = match key.filter(|k| !k.is_none()) {
            Some(k) => lb.pick_for(&bytes_arg(k, "key")?).py()?,
            None => lb.pick().py()?,
        };
        Ok(Pick::new(p))
    }

    /// Subscribes to this pool's events from now on.
    fn events(&self) -> Events {
        Events::new(&self.cluster)
    }
}
