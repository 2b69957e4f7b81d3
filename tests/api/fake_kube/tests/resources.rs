//! Jobs and Secrets over REST: create, get, list, delete, errors, the wire format.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

use super::{JOBS, LIMIT, api_error, create, eventually, job, start};

#[tokio::test]
async fn a_created_job_is_got_back_with_the_fields_the_server_sets() {
    let (fake, client) = start();
    let created = create(&client, job("hello", "busybox", json!({}))).await;
    let got = Api::<Job>::default_namespaced(client)
        .get("hello")
        .await
        .unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    assert!(got.metadata.creation_timestamp.is_some() && got.metadata.resource_version.is_some());
    let spec = got.spec.unwrap();
    assert_eq!(spec.backoff_limit, Some(6), "backoffLimit defaults to 6");
    assert_eq!(
        spec.template.metadata.unwrap().labels.unwrap()["job-name"],
        "hello"
    );
    assert_eq!(
        fake.job("default", "hello").unwrap().metadata.uid,
        created.metadata.uid
    );
    assert_eq!(fake.jobs().len(), 1);
}

#[tokio::test]
async fn job_errors_reach_kube_as_api_errors_with_the_api_servers_codes() {
    let (_fake, client) = start();
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    create(&client, job("taken", "busybox", json!({}))).await;
    let pp = PostParams::default();
    let mut always = job("always", "busybox", json!({}));
    always
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .restart_policy = Some("Always".into());
    let cases = [
        (
            jobs.create(&pp, &job("taken", "busybox", json!({}))).await,
            409,
            "AlreadyExists",
            "a duplicate name",
        ),
        (jobs.get("missing").await, 404, "NotFound", "an unknown job"),
        (
            jobs.create(&pp, &always).await,
            422,
            "Invalid",
            "restartPolicy Always",
        ),
        (
            jobs.create(&pp, &job(&"x".repeat(64), "busybox", json!({})))
                .await,
            422,
            "Invalid",
            "a 64-char name",
        ),
    ];
    for (result, code, reason, case) in cases {
        let (got_code, got_reason) = api_error(result.expect_err(case));
        assert_eq!((got_code, got_reason.as_str()), (code, reason), "{case}");
    }
}

#[tokio::test]
async fn secrets_are_created_got_and_deleted_and_unknown_ones_are_404() {
    let (fake, client) = start();
    let secrets: Api<Secret> = Api::default_namespaced(client);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "run-env"}, "stringData": {"TOKEN": "s3cret"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let got = secrets.get("run-env").await.unwrap();
    assert_eq!(
        got.data.unwrap()["TOKEN"].0,
        b"s3cret",
        "stringData is folded into data"
    );
    assert!(fake.secret("default", "run-env").is_some());
    secrets
        .delete("run-env", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        api_error(secrets.get("run-env").await.unwrap_err()),
        (404, "NotFound".into())
    );
    assert!(fake.secret("default", "run-env").is_none());
}

#[tokio::test]
async fn deleting_a_job_in_the_background_removes_its_pods_and_owned_secret() {
    let (fake, client) = start();
    let created = create(&client, job("doomed", "busybox", json!({}))).await;
    let owner = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "doomed", "uid": created.metadata.uid}]);
    let secret = serde_json::from_value(
        json!({"metadata": {"name": "doomed-env", "ownerReferences": owner}}),
    );
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    secrets
        .create(&PostParams::default(), &secret.unwrap())
        .await
        .unwrap();
    eventually("a pod", || fake.pods_of("doomed").pop()).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let answer = jobs
        .delete("doomed", &DeleteParams::background())
        .await
        .unwrap();
    assert!(
        answer.is_right(),
        "an immediate delete answers with a Status"
    );
    assert!(fake.job("default", "doomed").is_none() && fake.pods_of("doomed").is_empty());
    assert!(fake.secret("default", "doomed-env").is_none());
    assert_eq!(
        api_error(
            jobs.delete("doomed", &DeleteParams::background())
                .await
                .unwrap_err()
        )
        .0,
        404
    );
}

#[tokio::test]
async fn deleting_a_job_without_a_propagation_policy_orphans_its_pods_like_batch_v1() {
    let (fake, client) = start();
    create(&client, job("orphaning", "busybox", json!({}))).await;
    eventually("a pod", || fake.pods_of("orphaning").pop()).await;
    let jobs: Api<Job> = Api::default_namespaced(client);
    jobs.delete("orphaning", &DeleteParams::default())
        .await
        .unwrap();
    assert!(fake.job("default", "orphaning").is_none());
    let pod = fake.pods_of("orphaning").pop().expect("the pod is kept");
    assert!(
        pod.metadata.owner_references.is_none(),
        "and no longer owned"
    );
}

#[tokio::test]
async fn list_label_selectors_match_like_the_api_servers() {
    let (_fake, client) = start();
    for (name, team) in [("a", Some("red")), ("b", Some("blue")), ("c", None)] {
        let mut job = job(name, "busybox", json!({}));
        if let Some(team) = team {
            job.metadata
                .labels
                .as_mut()
                .unwrap()
                .insert("team".into(), team.into());
        }
        create(&client, job).await;
    }
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let cases = [
        ("team=red", vec!["a"]),
        ("team", vec!["a", "b"]),
        ("!team", vec!["c"]),
        ("team!=red", vec!["b", "c"]),
        ("team in (red,blue)", vec!["a", "b"]),
        (
            "team notin (red), app.kubernetes.io/managed-by=proctor",
            vec!["b", "c"],
        ),
    ];
    for (selector, expected) in cases {
        let list = jobs
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        let names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .collect();
        assert_eq!(names, expected, "{selector}");
    }
    let everywhere = Api::<Job>::all(client)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(everywhere.items.len(), 3, "the cluster-wide list");
}

#[tokio::test]
async fn the_wire_format_is_the_api_servers_and_every_request_is_counted() {
    let (fake, client) = start();
    create(&client, job("wire", "busybox", json!({}))).await;
    let http = crate::helpers::http_client();
    let url = format!("{}/apis/batch/v1/namespaces/default/jobs", fake.url());
    let list: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (list["kind"].as_str(), list["items"][0]["kind"].as_str()),
        (Some("JobList"), None)
    );
    assert!(list["metadata"]["resourceVersion"].as_str().is_some());
    let watch = http
        .get(format!("{url}?watch=1&resourceVersion=0&timeoutSeconds=1"))
        .send();
    let body = tokio::time::timeout(LIMIT, async { watch.await.unwrap().text().await.unwrap() });
    let first: Value = serde_json::from_str(body.await.unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["type"].as_str(), first["object"]["kind"].as_str()),
        (Some("ADDED"), Some("Job"))
    );
    let missing: Value = http
        .get(format!("{url}/nope"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "jobs.batch \"nope\" not found", "reason": "NotFound",
        "details": {"name": "nope", "group": "batch", "kind": "jobs"}, "code": 404
    });
    assert_eq!(missing, expected);
    let requests = fake.requests();
    assert_eq!(
        requests.count("POST /apis/batch/v1/namespaces/{ns}/jobs"),
        1
    );
    assert_eq!((requests.count(JOBS), requests.watch_count(JOBS)), (2, 1));
    assert_eq!(
        requests.count("GET /apis/batch/v1/namespaces/{ns}/jobs/{name}"),
        1
    );
    assert_eq!(requests.total, 4);
    assert_eq!(requests.log.len(), 4);
    let mut open = http.get(format!("{url}?watch=true")).send().await.unwrap();
    fake.drop_watches();
    let read_to_end = async {
        loop {
            match open.chunk().await {
                Ok(Some(_)) => continue,
                outcome => return outcome,
            }
        }
    };
    let outcome = tokio::time::timeout(LIMIT, read_to_end).await.unwrap();
    assert!(
        outcome.is_err(),
        "a dropped watch is cut, not ended cleanly: {outcome:?}"
    );
}
